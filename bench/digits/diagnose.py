"""Why does FIA not forget on the digits model? Controls that separate the method from the model.

Every row forgets P1's digits (zero..four) and is judged like the benchmark. The rows vary
what FIA contrasts the concept with, and how much it prunes:

- base "digit": the benchmark's base prompt, ``a handwritten digit {context}``;
- base "kept digits": ``a handwritten {a kept digit} {context}``, the most informative
  contrast there is for P1 (it knows what must be kept), to see whether any contrast
  would find digit-specific weights;
- base "no digit word": ``a handwritten {context}``;
- random: as many weights of every layer as the first contrast's row prunes, chosen at random.
  If FIA's selection carried the concept, it would forget more than random at equal cost.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch

from fia_engine import find_target_layers, fuse, localize_concepts
from fia_engine.diffusers_runner import collect_saliency
from fia_engine.masks import FIAMask
from fia_engine.prompts import PromptPlan, PromptSample
from fia_engine.saliency import GroupPlan

from .benchmark import P1_FORGET
from .data import CONTEXTS, DIGIT_WORDS
from .unlearning import CONCEPT_TEMPLATE, DigitsBench, FiaSettings, masked_unet

logger = logging.getLogger(__name__)

CONTRASTS = ("digit", "kept digits", "no digit word")


@dataclass
class DiagnosisRow:
    contrast: str
    r2: float
    pruned_fraction: float
    forget: float
    preserve: float


def contrast_plan(concepts: list[str], base_words: list[str], pairs: int) -> PromptPlan:
    """Concept sample k against ``a handwritten {base_words[k]} {context_k}``, one shared base group."""
    samples = []
    for group, concept in enumerate(concepts):
        for k in range(pairs):
            text = CONCEPT_TEMPLATE.format(concept=concept, context=CONTEXTS[k % len(CONTEXTS)])
            samples.append(PromptSample(text, k, group))
    base_group = len(concepts)
    for k in range(pairs):
        text = " ".join(f"a handwritten {base_words[k % len(base_words)]} {CONTEXTS[k % len(CONTEXTS)]}".split())
        samples.append(PromptSample(text, k, base_group))
    groups = GroupPlan(tuple(concepts), tuple(range(len(concepts))), (base_group,) * len(concepts))
    return PromptPlan(tuple(samples), groups)


def _base_words(contrast: str, forget: list[int]) -> list[str] | None:
    if contrast == "digit":
        return None  # the benchmark's own plan
    if contrast == "kept digits":
        return [DIGIT_WORDS[d] for d in range(10) if d not in forget]
    if contrast == "no digit word":
        return [""]
    raise ValueError(f"unknown contrast {contrast!r}; choose from {CONTRASTS}")


def random_pruned_unet(unet: torch.nn.Module, like: FIAMask, seed: int) -> torch.nn.Module:
    """A copy of the UNet with as many weights of every layer zeroed as ``like`` prunes, at random."""
    generator = torch.Generator().manual_seed(seed)
    edited = copy.deepcopy(unet)
    for layer in find_target_layers(edited):
        weight = layer.module.weight.data
        count = int(like.indices[layer.canonical].numel())
        chosen = torch.randperm(weight.numel(), generator=generator)[:count]
        weight.view(-1)[chosen] = 0
    return edited


def diagnose(
    bench: DigitsBench,
    settings: FiaSettings,
    r2_values: tuple[float, ...],
    contrasts: tuple[str, ...] = CONTRASTS,
    forget: list[int] = P1_FORGET,
) -> list[DiagnosisRow]:
    kept = [d for d in range(10) if d not in forget]
    concepts = [DIGIT_WORDS[d] for d in forget]

    def judged(contrast: str, r2: float, unet, fraction: float) -> DiagnosisRow:
        accuracy = bench.accuracy(unet).mean(axis=0)
        row = DiagnosisRow(contrast, r2, fraction, float(accuracy[forget].mean()), float(accuracy[kept].mean()))
        logger.info("%s r2=%s: forget %.3f preserve %.3f", contrast, r2, row.forget, row.preserve)
        return row

    rows = [judged("original", 0.0, None, 0.0)]
    reference_masks: dict[float, FIAMask] = {}
    collection = settings.collection("fast")
    for contrast in contrasts:
        words = _base_words(contrast, forget)
        plan = None if words is None else contrast_plan(concepts, words, settings.pairs)
        saliency = collect_saliency(bench.engine, concepts, collection, plan=plan)
        for r2 in r2_values:
            mask = fuse(localize_concepts(saliency, settings.r1, r2), settings.alpha)
            reference_masks.setdefault(r2, mask)
            rows.append(judged(contrast, r2, masked_unet(bench.engine.unet, mask), mask.pruned_fraction))
    for r2, mask in reference_masks.items():
        rows.append(judged("random", r2, random_pruned_unet(bench.engine.unet, mask, seed=0), mask.pruned_fraction))
    return rows


def diagnosis_report(command: str, settings: FiaSettings, bench: DigitsBench, rows: list[DiagnosisRow]) -> str:
    original = rows[0]
    lines = [
        "## 8. Digits: why FIA does not forget here (issue 4)",
        "",
        f"Command: `{command}`",
        "",
        f"P1 (forget zero..four), FIA fast, K = {settings.pairs}, {settings.saliency_steps} saliency steps of "
        f"{settings.steps}, r1 = {settings.r1}, alpha = {settings.alpha}; judged on {bench.n} images per digit, "
        f"seeds {list(bench.seeds)}, {bench.sample_steps} DDIM steps. 'random' prunes as many weights of every "
        f"layer as the '{rows[1].contrast}' row of the same r2, chosen at random (seed 0). Relative = accuracy over the "
        "original's on the same digits.",
        "",
        "| contrast (base prompt) | r2 | pruned % | forget acc | preserve acc | forget rel. | preserve rel. |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r2 = "-" if row.contrast == "original" else f"{row.r2:g}"
        lines.append(
            f"| {row.contrast} | {r2} | {100 * row.pruned_fraction:.2f} | {row.forget:.3f} | {row.preserve:.3f} | "
            f"{row.forget / max(1e-9, original.forget):.2f} | {row.preserve / max(1e-9, original.preserve):.2f} |"
        )
    return "\n".join(lines) + "\n"
