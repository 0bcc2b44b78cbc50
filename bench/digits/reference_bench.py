"""P1 rows of the FIA authors' release next to the engine's FIA, with the masks' overlap.

Rows (all judged by the benchmark's sampler and judge, on the same model in one process):
the original; the release as it is; optionally the release with each collection difference
switched to the engine's choice (reference.release_variants); the engine's FIA fast at the
benchmark's settings; the engine's FIA fast and exact at the closest settings it offers
(guidance 7.5, the folder's leading spacing, unconditional rows added as samples). Every row
carries its IoU with the release's own mask.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

from fia_engine import fuse, localize_concepts
from fia_engine.diffusers_runner import collect_saliency
from fia_engine.masks import FIAMask

from .benchmark import P1_FORGET
from .data import DIGIT_WORDS
from .mask_compare import LayerComparison, compare
from .reference import RELEASE_GUIDANCE, ReleaseSettings, ReleaseVariant, release_mask, release_variants
from .unlearning import DigitsBench, FiaSettings, masked_unet

logger = logging.getLogger(__name__)


@dataclass
class ReferenceRow:
    name: str
    pruned: float
    forget: float
    preserve: float
    seconds: float
    iou_with_release: float | None


@dataclass
class ReferenceRun:
    original_forget: float
    original_preserve: float
    rows: list[ReferenceRow]
    layers: list[LayerComparison]  # the release's mask against the engine's closest FIA fast


def overall_iou(a: FIAMask, b: FIAMask) -> float:
    rows = compare(a, b)
    shared = sum(r.shared for r in rows)
    union = sum(r.a + r.b - r.shared for r in rows)
    return shared / union if union else 1.0


def closest_engine_settings(fia: FiaSettings, mode: str, seed: int):
    """The engine's collection set as near the release as its options go."""
    collection = fia.collection(mode, seed=seed)
    return dataclasses.replace(collection, cfg=RELEASE_GUIDANCE, timestep_spacing=None, include_uncond=True)


def engine_mask(bench: DigitsBench, fia: FiaSettings, collection) -> tuple[FIAMask, float]:
    start = time.perf_counter()
    saliency = collect_saliency(bench.engine, [DIGIT_WORDS[d] for d in P1_FORGET], collection)
    mask = fuse(localize_concepts(saliency, fia.r1, fia.r2), fia.alpha)
    return mask, time.perf_counter() - start


def run_reference(
    bench: DigitsBench, release: dict, settings: ReleaseSettings, differences: bool = False
) -> tuple[ReferenceRun, FIAMask]:
    kept = [d for d in range(10) if d not in P1_FORGET]
    concepts = [DIGIT_WORDS[d] for d in P1_FORGET]
    fia = settings.fia

    def judged(name: str, mask: FIAMask, seconds: float, reference: FIAMask | None) -> ReferenceRow:
        accuracy = bench.accuracy(masked_unet(bench.sampling.unet, mask)).mean(axis=0)
        row = ReferenceRow(
            name,
            mask.pruned_fraction,
            float(accuracy[P1_FORGET].mean()),
            float(accuracy[kept].mean()),
            seconds,
            None if reference is None else overall_iou(mask, reference),
        )
        logger.info("%s: forget %.3f preserve %.3f", name, row.forget, row.preserve)
        return row

    original = bench.accuracy().mean(axis=0)
    variants = release_variants(fia.cfg) if differences else [ReleaseVariant()]
    theirs, seconds = release_mask(release, bench.sampling, concepts, settings, variants[0])
    rows = [judged(variants[0].name, theirs, seconds, None)]
    for variant in variants[1:]:
        mask, seconds = release_mask(release, bench.sampling, concepts, settings, variant)
        rows.append(judged(variant.name, mask, seconds, theirs))
    engine_rows = [
        ("engine FIA fast, the benchmark's settings", fia.collection("fast")),
        ("engine FIA fast, the closest settings", closest_engine_settings(fia, "fast", 0)),
        ("engine FIA exact, the closest settings", closest_engine_settings(fia, "exact", 0)),
    ]
    closest = None
    for name, collection in engine_rows:
        mask, seconds = engine_mask(bench, fia, collection)
        closest = mask if name.startswith("engine FIA fast, the closest") else closest
        rows.append(judged(name, mask, seconds, theirs))
    run = ReferenceRun(float(original[P1_FORGET].mean()), float(original[kept].mean()), rows, compare(theirs, closest))
    return run, theirs


def report(run: ReferenceRun) -> str:
    from .mask_compare import comparison_table

    lines = [
        f"original: forget {run.original_forget:.3f}, preserve {run.original_preserve:.3f}",
        "",
        "| row (P1) | pruned % | forget acc | preserve acc | preserve / original's | IoU with the release's mask | mask s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in run.rows:
        iou = "-" if r.iou_with_release is None else f"{r.iou_with_release:.3f}"
        lines.append(
            f"| {r.name} | {100 * r.pruned:.3f} | {r.forget:.3f} | {r.preserve:.3f} | "
            f"{r.preserve / max(run.original_preserve, 1e-9):.2f} | {iou} | {r.seconds:.1f} |"
        )
    lines += ["", comparison_table(run.layers, "release", "engine fast (closest)")]
    return "\n".join(lines)
