"""The unlearning methods the benchmark compares, each as "forget these digits -> edited UNet".

A method group is called once per forget set and may return several rows when they share
work (FIA fast and its union row share one saliency collection). Every edit is a copy: the
bench's UNet is never changed, so all rows of one run start from the same weights.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from fia_engine import fuse, localize_concepts
from fia_engine.diffusers_runner import collect_saliency

from .data import CONTEXTS, DIGIT_WORDS
from .unlearning import DigitsBench, FiaSettings, masked_unet


@dataclass
class Edit:
    unet: torch.nn.Module
    fraction: float  # of the weights the method may touch: pruned (FIA) or edited (ScaPre)
    seconds: float  # time to make the edit (collection + localisation + fusion, or the solve)
    made: object = None  # the FIAMask or ScaPreEdit itself, to save or export


MethodGroup = Callable[[DigitsBench, list[int]], dict[str, Edit]]

FIA_FAST, FIA_EXACT, FIA_UNION = "FIA fast", "FIA exact", "FIA union (no agnostic protection)"


def fia_group(settings: FiaSettings, modes: tuple[str, ...] = ("fast", "exact"), union: bool = True) -> MethodGroup:
    """FIA in the given modes; the union row reuses the fast collection with protection off."""

    def run(bench: DigitsBench, forget: list[int]) -> dict[str, Edit]:
        concepts = [DIGIT_WORDS[d] for d in forget]
        edits = {}
        for mode in modes:
            start = time.perf_counter()
            saliency = collect_saliency(bench.engine, concepts, settings.collection(mode))
            masks = localize_concepts(saliency, settings.r1, settings.r2)
            collected = time.perf_counter() - start
            variants = [(f"FIA {mode}", True)] + ([(FIA_UNION, False)] if union and mode == "fast" else [])
            for name, protect in variants:
                fuse_start = time.perf_counter()
                mask = fuse(masks, settings.alpha, protect_agnostic=protect)
                seconds = collected + time.perf_counter() - fuse_start
                edits[name] = Edit(masked_unet(bench.engine.unet, mask), mask.pruned_fraction, seconds, mask)
        return edits

    return run


SCAPRE, UCE = "ScaPre", "closed-form (UCE-like)"


def scapre_group(modes: tuple[str, ...] = ("scapre", "uce"), settings=None) -> MethodGroup:
    """ScaPre and the plain closed form on the same prompts FIA uses.

    Each forgotten digit is erased in every context phrase of FIA's template (and without
    one), mapped onto the same prompt with the neutral word "digit" in its place, token by
    token; the kept digits' prompts are preserved. Concept and anchor prompts have the same
    length here, so every edited position has its own anchor row. ``settings`` (a
    ScaPreSettings; its mode is replaced by each of ``modes``) defaults to the engine's.
    """
    from fia_engine.diffusers_runner import encode_prompts
    from fia_engine.scapre import (
        ScaPreSettings,
        compute_edit,
        find_cross_attention_projections,
        row_owners,
        rows_at_positions,
    )
    from fia_engine.scapre.runner import encode_token_rows

    places = ("", *CONTEXTS)

    def prompts(words: list[str]) -> list[str]:
        return [f"a handwritten {w} {c}".strip() for w in words for c in places]

    def run(bench: DigitsBench, forget: list[int]) -> dict[str, Edit]:
        components = bench.engine
        kept = [DIGIT_WORDS[d] for d in range(10) if d not in forget]
        edits = {}
        for mode in modes:
            start = time.perf_counter()
            concept_rows, lengths = encode_token_rows(components, prompts([DIGIT_WORDS[d] for d in forget]))
            anchor_rows, anchor_lengths = encode_token_rows(components, prompts(["digit"] * len(forget)))
            if anchor_lengths != lengths:
                raise RuntimeError("digit words must be single tokens for the aligned anchor rows")
            preserve_rows = encode_token_rows(components, prompts(kept))[0] if kept else None
            empty_rows = rows_at_positions(encode_prompts(components, [""]), lengths)
            targets = find_cross_attention_projections(components.unet)
            edit = compute_edit(
                targets.weights(),
                concept_rows,
                anchor_rows,
                preserve_rows,
                replace(settings or ScaPreSettings(), mode=mode),
                empty_tokens=empty_rows,
                concept_ids=row_owners(lengths) // len(places),  # a digit's prompts are one concept
            )
            seconds = time.perf_counter() - start
            unet = copy.deepcopy(components.unet)
            for target in find_cross_attention_projections(unet):
                target.module.weight.data = edit.edited_weight(target.canonical, target.module.weight)
            name = SCAPRE if mode == "scapre" else UCE
            edits[name] = Edit(unet, edit.summary()["edited_fraction"], seconds, edit)
        return edits

    return run
