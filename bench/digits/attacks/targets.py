"""The models under attack: the original (the control) and each method's P1 edit of it."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fia_engine import find_target_layers
from fia_engine.decoys import decoy_weight, layer_generator
from fia_engine.masks import FIAMask

from ..edits import edited_unet
from ..unlearning import DigitsBench

logger = logging.getLogger(__name__)

ORIGINAL = "original (control)"
LEARNED = "learned FFN2 mask (not FIA)"
LEARNED_DECOYS = "learned FFN2 mask, decoy fill"
FIA = "FIA fast"
METHODS = ("scapre", "uce", "learned-mask", "fia")
# FIA does not forget on the bundled model (RESULTS 3, 8, 15): it is attacked only when asked,
# e.g. on a model that passes issue 12's gate (--model DIR --method fia).
DEFAULT_METHODS = ("scapre", "uce", "learned-mask")


@dataclass
class Target:
    name: str
    unet: torch.nn.Module
    mask: FIAMask | None = None  # the pruned FFN2 entries, for the refill attack


def decoy_unet(unet: torch.nn.Module, mask: FIAMask, seed: int) -> torch.nn.Module:
    """A copy with the mask applied the way ``bake --fill decoys`` writes it (the same function)."""
    edited = copy.deepcopy(unet)
    for layer in find_target_layers(edited):
        weight = layer.module.weight
        layer.module.weight.data = decoy_weight(
            weight, mask.indices[layer.canonical], layer_generator(seed, layer.canonical)
        )
    return edited


def learn_p1_mask(bench: DigitsBench, forget: list[int], steps: int, path: Path) -> None:
    """Issue 12's gate settings (objective 'kept', budget 5 %, hard gates from half-way), saved to ``path``."""
    from ..gate import as_mask
    from ..mask_oracle import OracleSettings, learn_mask, pruned_sets

    settings = OracleSettings(steps=steps, objective="kept", budget=0.05, hard_from=0.5)
    started = time.perf_counter()
    unet, fraction, _ = learn_mask(bench, forget, "ffn2", settings)
    description = f"learned FFN2 mask for P1, {steps} steps (attack bench)"
    path.parent.mkdir(parents=True, exist_ok=True)
    as_mask(bench.sampling.unet, pruned_sets(unet), description).save(path)
    logger.info(
        "learned a %.2f %% FFN2 mask in %.0f s, saved to %s", 100 * fraction, time.perf_counter() - started, path
    )


def build_targets(
    bench: DigitsBench, forget: list[int], methods: tuple[str, ...], mask_path: Path | None, decoy_seed: int = 0
) -> list[Target]:
    """The original and one Target per method; the learned mask also baked with decoys."""
    unet = bench.sampling.unet
    targets = [Target(ORIGINAL, unet)]
    closed_form = tuple(m for m in ("scapre", "uce") if m in methods)
    if closed_form:
        from ..methods import scapre_group

        for name, edit in scapre_group(closed_form)(bench, forget).items():
            targets.append(Target(name, edit.unet))
    if "fia" in methods:
        from ..methods import FIA_FAST, fia_group
        from ..unlearning import FiaSettings

        edit = fia_group(FiaSettings(), modes=("fast",), union=False)(bench, forget)[FIA_FAST]
        targets.append(Target(FIA, edit.unet, edit.made))
    if "learned-mask" in methods:
        if mask_path is None:
            raise ValueError("the learned-mask method needs a mask file")
        mask = FIAMask.load(mask_path)
        targets.append(Target(LEARNED, edited_unet(unet, mask_path), mask))
        targets.append(Target(LEARNED_DECOYS, decoy_unet(unet, mask, decoy_seed), mask))
    return targets
