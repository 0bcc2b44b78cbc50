"""Does FIA's saliency see the weights a learned FFN2 mask removes? (issue 12, item 4)

FIA's pipeline is collect -> localise -> fuse. The learned mask (gate.py) is a mask of the
same layers that does forget. This check asks where FIA loses it:

- collection: per layer, how FIA's time-averaged saliency of the forgotten concepts ranks the
  learned mask's weights (AUC: 0.5 = no better than chance, 1 = all of them on top), and which
  share of them lies in input columns (FFN hidden units) FIA scores above zero at all;
- localisation: FIA's own score, pruned at the learned mask's size three ways: with the learned
  mask's per-layer allocation, one top-k over all layers (each layer divided by its maximum,
  as A is), and the same share of every layer (what FIA's per-layer r2 does).

If the learned allocation rescues FIA's score, the loss is in localisation; if FIA's score
ranks the learned weights near chance, the loss is already in the collection.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch

from fia_engine import find_target_layers
from fia_engine.diffusers_runner import collect_saliency
from fia_engine.errors import InvalidInputError
from fia_engine.layers import weight_signature
from fia_engine.masks import FIAMask
from fia_engine.saliency import ConceptSaliency

from .benchmark import P1_FORGET
from .contrasts import scores_of
from .data import DIGIT_WORDS
from .unlearning import DigitsBench, FiaSettings

logger = logging.getLogger(__name__)


@dataclass
class LayerRank:
    layer: str
    learned_share: float
    auc: float
    in_scored_columns: float  # share of the learned weights whose column FIA scores > 0
    columns_touched: int
    columns: int


@dataclass
class PruneRow:
    selection: str
    pruned: float
    forget: float
    preserve: float


def collect_p1(
    bench: DigitsBench, forget: list[int], settings: FiaSettings, keep_contrast: bool = False
) -> ConceptSaliency:
    """FIA's fast collection for the forgotten digits (keep_contrast: for contrasts.py)."""
    words = [DIGIT_WORDS[d] for d in forget]
    return collect_saliency(bench.engine, words, settings.collection("fast"), keep_contrast=keep_contrast)


def auc(score: torch.Tensor, positives: torch.Tensor) -> float:
    """Probability that a positive entry outranks a negative one (ties count half)."""
    labels = torch.zeros_like(score, dtype=torch.bool)
    labels[positives] = True
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    order = torch.sort(score).values
    below = torch.searchsorted(order, score[labels], right=False).double()
    ties = torch.searchsorted(order, score[labels], right=True).double() - below
    # each positive: negatives strictly below + half the tied ones (positives removed below)
    ranks = below + 0.5 * (ties - 1)
    positive_pairs = n_pos * (n_pos - 1) / 2  # positive-positive pairs counted in the ranks
    return float((ranks.sum() - positive_pairs) / (n_pos * n_neg))


def rank_layers(learned: FIAMask, scores: dict[str, torch.Tensor]) -> list[LayerRank]:
    rows = []
    for name, score in scores.items():
        c_out, c_in = learned.shapes[name]
        chosen = learned.indices.get(name, torch.empty(0, dtype=torch.long))
        column_positive = score.view(c_out, c_in).amax(dim=0) > 0
        columns = chosen % c_in
        rows.append(
            LayerRank(
                name,
                chosen.numel() / (c_out * c_in),
                auc(score, chosen),
                float(column_positive[columns].float().mean()) if chosen.numel() else float("nan"),
                int(columns.unique().numel()),
                c_in,
            )
        )
    return rows


def _selections(learned: FIAMask, scores: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    per_layer = {name: int(learned.indices.get(name, torch.empty(0)).numel()) for name in scores}
    total = sum(per_layer.values())
    normalised = {name: s / s.max().clamp(min=1e-12) for name, s in scores.items()}
    threshold = torch.topk(torch.cat(list(normalised.values())), total).values[-1]
    share = total / learned.total_count
    return {
        "learned mask": dict(learned.indices),
        "FIA's score, the learned mask's allocation over layers": {
            name: torch.topk(s, per_layer[name]).indices for name, s in scores.items()
        },
        "FIA's score, one top-k over all layers": {
            name: torch.nonzero(s >= threshold).flatten() for name, s in normalised.items()
        },
        "FIA's score, the same share of every layer": {
            name: torch.topk(s, int(share * s.numel())).indices for name, s in scores.items()
        },
    }


def prune_rows(
    bench: DigitsBench, learned: FIAMask, scores: dict[str, torch.Tensor], forget: list[int]
) -> list[PruneRow]:
    kept = [d for d in range(10) if d not in forget]
    original = bench.accuracy().mean(axis=0)
    rows = [PruneRow("none (original)", 0.0, float(original[forget].mean()), float(original[kept].mean()))]
    for label, chosen in _selections(learned, scores).items():
        unet = copy.deepcopy(bench.sampling.unet)
        layers = {layer.canonical: layer.module for layer in find_target_layers(unet)}
        pruned = 0
        for name, indices in chosen.items():
            layers[name].weight.data.view(-1)[indices] = 0
            pruned += indices.numel()
        accuracy = bench.accuracy(unet).mean(axis=0)
        rows.append(
            PruneRow(label, pruned / learned.total_count, float(accuracy[forget].mean()), float(accuracy[kept].mean()))
        )
        logger.info("%s: forget %.3f preserve %.3f", label, rows[-1].forget, rows[-1].preserve)
    return rows


def require_made_for(bench: DigitsBench, learned: FIAMask) -> None:
    targets = find_target_layers(bench.sampling.unet)
    if not learned.check_compatible({t.canonical: t.shape for t in targets}, weight_signature(targets), targets.family):
        raise InvalidInputError(
            "the learned mask was made for another checkpoint: learn it on this model (gate --save-mask)"
        )


def check(
    bench: DigitsBench, learned: FIAMask, settings: FiaSettings | None = None, saliency: ConceptSaliency | None = None
) -> tuple[list[LayerRank], list[PruneRow]]:
    """saliency: a fast collection of P1 already made (collect_p1), else one is made here."""
    require_made_for(bench, learned)
    scores = scores_of(saliency or collect_p1(bench, P1_FORGET, settings or FiaSettings()))
    return rank_layers(learned, scores), prune_rows(bench, learned, scores, P1_FORGET)


def report(ranks: list[LayerRank], rows: list[PruneRow]) -> str:
    lines = [
        "| layer | learned % | AUC of the learned weights under FIA's saliency | in columns FIA scores > 0 % | columns touched |",
        "|---|---|---|---|---|",
    ]
    for r in ranks:
        lines.append(
            f"| {r.layer} | {100 * r.learned_share:.2f} | {r.auc:.3f} | {100 * r.in_scored_columns:.1f} | "
            f"{r.columns_touched}/{r.columns} |"
        )
    lines += ["", "| selection (P1) | pruned % | forget acc | preserve acc |", "|---|---|---|---|"]
    lines += [f"| {r.selection} | {100 * r.pruned:.2f} | {r.forget:.3f} | {r.preserve:.3f} |" for r in rows]
    return "\n".join(lines)
