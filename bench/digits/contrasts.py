"""FIA with other column contrasts than the paper's, on one fast collection (issue 12, item 4).

FIA's fast saliency scores an FFN hidden unit by max(0, mean_concept - mean_base - std_base) of
its token-normalised activation norm. On the gate-passing digits model that margin is zero for
most units that the learned mask prunes. These variants ask whether a contrast that does see
them would make FIA forget: each is turned into column scores, then localised and fused
exactly as FIA's own (same r1, r2, alpha).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from fia_engine import fuse, localize_concepts
from fia_engine.saliency import ColumnContrast, ConceptSaliency

from .unlearning import DigitsBench, FiaSettings, masked_unet

logger = logging.getLogger(__name__)

CONTRASTS: dict[str, Callable[[ColumnContrast], torch.Tensor]] = {
    "paper": lambda c: (c.concept_mean - c.base_mean - c.base_std).clamp(min=0),
    "no-margin": lambda c: (c.concept_mean - c.base_mean).clamp(min=0),
    "two-sided": lambda c: (c.concept_mean - c.base_mean).abs(),
}
DESCRIPTIONS = {
    "paper": "max(0, mean_c - mean_b - std_b), FIA's",
    "no-margin": "max(0, mean_c - mean_b)",
    "two-sided": "|mean_c - mean_b|",
}


@dataclass
class ContrastRow:
    contrast: str
    r2: float
    pruned: float
    forget: float
    preserve: float


def with_contrast(saliency: ConceptSaliency, contrast: str) -> ConceptSaliency:
    """The same collection with every layer's column scores made by ``contrast``."""
    layers = {}
    for name, layer in saliency.layers.items():
        if layer.contrast is None:
            raise ValueError("the collection kept no contrast terms: collect with keep_contrast=True in fast mode")
        layers[name] = replace(layer, column_scores=CONTRASTS[contrast](layer.contrast))
    return replace(saliency, layers=layers, cache={})


def fia_rows(
    bench: DigitsBench,
    saliency: ConceptSaliency,
    contrasts: list[str],
    r2s: list[float],
    settings: FiaSettings,
    forget: list[int],
) -> list[ContrastRow]:
    """FIA fast (localisation and fusion at ``settings``) with each contrast and r2, judged on P1."""
    kept = [d for d in range(10) if d not in forget]
    rows = []
    for contrast in contrasts:
        varied = with_contrast(saliency, contrast)
        for r2 in r2s:
            mask = fuse(localize_concepts(varied, settings.r1, r2), settings.alpha)
            accuracy = bench.accuracy(masked_unet(bench.engine.unet, mask)).mean(axis=0)
            rows.append(
                ContrastRow(
                    contrast, r2, mask.pruned_fraction, float(accuracy[forget].mean()), float(accuracy[kept].mean())
                )
            )
            logger.info(
                "contrast %s, r2 %g: forget %.3f preserve %.3f", contrast, r2, rows[-1].forget, rows[-1].preserve
            )
    return rows


def scores_of(saliency: ConceptSaliency) -> dict[str, torch.Tensor]:
    """Per layer, flat: max over the concepts of |W| * the time-mean column score."""
    scores = {}
    for name, layer in saliency.layers.items():
        columns = layer.column_scores.float().mean(dim=1)  # (concepts, C_in)
        scores[name] = (layer.weight_abs.float()[None] * columns[:, None, :]).amax(dim=0).flatten()
    return scores


def contrast_scores(saliency: ConceptSaliency, contrasts: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    return {contrast: scores_of(with_contrast(saliency, contrast)) for contrast in contrasts}


def report(aucs: dict[str, list], rows: list[ContrastRow]) -> str:
    """aucs: per contrast, rank_layers' rows for the learned mask."""
    names = list(aucs)
    lines = [
        "AUC of the learned weights under each contrast (" + "; ".join(f"{n}: {DESCRIPTIONS[n]}" for n in names) + "):",
        "",
        "| layer | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for i, rank in enumerate(aucs[names[0]]):
        lines.append(f"| {rank.layer} | " + " | ".join(f"{aucs[n][i].auc:.3f}" for n in names) + " |")
    lines += [
        "",
        "| FIA fast with contrast (P1) | r2 | pruned % | forget acc | preserve acc |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r.contrast} | {r.r2:g} | {100 * r.pruned:.2f} | {r.forget:.3f} | {r.preserve:.3f} |" for r in rows]
    return "\n".join(lines)
