"""Attack 3: refill pruned FFN2 entries from what the layer still holds.

Which entries (the threat):
- ``mask leaked``: the attacker has the mask file (worst case).
- ``exact zeros``: only the baked weights; every exact zero is a candidate. A trained layer
  has almost none of its own, so after a plain bake the zeros ARE the mask.
- ``outliers``: only the baked weights and the pruned count (the bake's metadata records
  it); the candidates are the entries that a low-rank fit of the layer explains worst. This
  is the search left to an attacker when the bake leaves no zeros (``--fill decoys``).

With what (the fill):
- ``low-rank completion``: hard-impute, per layer: missing entries start at the row's mean,
  then repeatedly take the rank-r SVD approximation and copy it into the missing entries
  only; r is chosen by hiding 5 % of the known entries and keeping the rank that predicts
  them best (the attacker never sees the original).
- ``row statistics``: every missing entry of a row gets the row's mean |w| with the sign of
  the row's mean (sign and magnitude from the row, no structure).
- ``true values``: the original weights back at the candidates. Not an attack (it needs the
  original) but the control: it shows that refilling these entries does revive the digit.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fia_engine import find_target_layers
from fia_engine.masks import FIAMask

logger = logging.getLogger(__name__)

RANKS = (1, 2, 4, 8, 16, 32)
ITERATIONS = 40
HOLDOUT = 0.05


def hard_impute(weight: torch.Tensor, missing: torch.Tensor, rank: int, iterations: int = ITERATIONS) -> torch.Tensor:
    """``weight`` with its ``missing`` (bool, same shape) entries filled by a rank-``rank`` fit of the rest."""
    filled = weight.clone()
    known = (~missing).to(weight.dtype)
    row_mean = (weight * known).sum(dim=1, keepdim=True) / known.sum(dim=1, keepdim=True).clamp_min(1)
    filled[missing] = row_mean.expand_as(weight)[missing]
    for _ in range(iterations):
        u, s, vh = torch.linalg.svd(filled, full_matrices=False)
        approx = (u[:, :rank] * s[:rank]) @ vh[:rank]
        filled[missing] = approx[missing]
    return filled


def complete_low_rank(
    weight: torch.Tensor, missing: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, int]:
    """Hard-impute at the rank that best predicts a held-out 5 % of the known entries; (filled, rank)."""
    known = torch.nonzero(~missing.view(-1)).flatten()
    hidden = known[torch.randperm(known.numel(), generator=generator)[: max(1, int(HOLDOUT * known.numel()))]]
    trial = missing.clone().view(-1)
    trial[hidden] = True
    trial = trial.view_as(missing)
    ranks = [r for r in RANKS if r < min(weight.shape)]
    errors = [
        float((hard_impute(weight, trial, r).view(-1)[hidden] - weight.view(-1)[hidden]).square().mean()) for r in ranks
    ]
    rank = ranks[min(range(len(ranks)), key=errors.__getitem__)]
    return hard_impute(weight, missing, rank), rank


def fill_row_statistics(weight: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
    known = (~missing).to(weight.dtype)
    count = known.sum(dim=1, keepdim=True).clamp_min(1)
    magnitude = (weight.abs() * known).sum(dim=1, keepdim=True) / count
    sign = torch.sign((weight * known).sum(dim=1, keepdim=True))
    filled = weight.clone()
    filled[missing] = (sign * magnitude).expand_as(weight)[missing]
    return filled


def outliers(weight: torch.Tensor, count: int, rank: int = 8) -> torch.Tensor:
    """Flat indices of the ``count`` entries a rank-``rank`` fit explains worst (relative to their row's spread)."""
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    residual = (weight - (u[:, :rank] * s[:rank]) @ vh[:rank]).abs()
    scaled = residual / weight.std(dim=1, keepdim=True).clamp_min(1e-12)
    return torch.topk(scaled.view(-1), min(count, weight.numel())).indices


@dataclass
class Refill:
    threat: str
    fill: str
    unet: torch.nn.Module
    candidates: int  # entries refilled
    true_hits: int  # of them, entries the mask pruned
    ranks: list[int]  # low-rank completion: the rank chosen per layer


THREATS = ("mask leaked", "exact zeros", "outliers", "all FFN2 weights")
TRAINED = "trained on the digits' images"
FILLS = ("low-rank completion", "row statistics", "true values (control)", TRAINED)


def candidate_sets(unet: torch.nn.Module, mask: FIAMask, threat: str) -> dict[str, torch.Tensor]:
    """Per canonical FFN2 layer, the flat indices the attacker refills under ``threat``."""
    out = {}
    for layer in find_target_layers(unet):
        weight, pruned = layer.module.weight.detach(), mask.indices[layer.canonical]
        if threat == "all FFN2 weights":
            out[layer.canonical] = torch.arange(weight.numel())
        else:
            out[layer.canonical] = _candidates(weight, pruned, int(pruned.numel()), threat)
    return out


def as_missing(unet: torch.nn.Module, flat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Flat indices per layer -> a bool tensor of each layer's weight shape."""
    out = {}
    for layer in find_target_layers(unet):
        missing = torch.zeros(layer.module.weight.numel(), dtype=torch.bool)
        missing[flat[layer.canonical]] = True
        out[layer.canonical] = missing.view_as(layer.module.weight)
    return out


def hits(mask: FIAMask, flat: dict[str, torch.Tensor]) -> int:
    """How many of the candidates the mask pruned."""
    return sum(int(torch.isin(idx, mask.indices[name].long()).sum()) for name, idx in flat.items())


def refill(
    unet: torch.nn.Module,
    original: torch.nn.Module,
    mask: FIAMask,
    threat: str,
    fill: str,
    seed: int = 0,
) -> Refill:
    """A copy of the attacked ``unet`` with the threat's candidate entries refilled by ``fill``."""
    attacked = copy.deepcopy(unet)
    originals = {layer.canonical: layer.module.weight for layer in find_target_layers(original)}
    generator = torch.Generator().manual_seed(seed)
    per_layer_count = {name: int(idx.numel()) for name, idx in mask.indices.items()}
    candidates = hits = 0
    ranks = []
    for layer in find_target_layers(attacked):
        name, weight = layer.canonical, layer.module.weight.detach()
        flat = _candidates(weight, mask.indices[name], per_layer_count[name], threat)
        if not flat.numel():
            continue
        missing = torch.zeros(weight.numel(), dtype=torch.bool)
        missing[flat] = True
        missing = missing.view_as(weight)
        new = _fill(fill, weight, missing, originals[name].detach(), generator, ranks)
        layer.module.weight.data = new
        candidates += int(flat.numel())
        hits += int(torch.isin(flat, mask.indices[name].long()).sum())
    logger.info("refill %s / %s: %d entries, %d of them pruned by the mask", threat, fill, candidates, hits)
    return Refill(threat, fill, attacked, candidates, hits, ranks)


def _candidates(weight: torch.Tensor, pruned: torch.Tensor, count: int, threat: str) -> torch.Tensor:
    if threat == "mask leaked":
        return pruned.long()
    if threat == "exact zeros":
        return torch.nonzero(weight.view(-1) == 0).flatten()
    if threat == "outliers":
        return outliers(weight, count) if count else torch.empty(0, dtype=torch.long)
    raise ValueError(f"unknown threat {threat!r}; choose from {THREATS}")


def _fill(
    fill: str, weight: torch.Tensor, missing: torch.Tensor, true: torch.Tensor, generator: torch.Generator, ranks: list
) -> torch.Tensor:
    fills: dict[str, Callable[[], torch.Tensor]] = {
        "row statistics": lambda: fill_row_statistics(weight, missing),
        "true values (control)": lambda: torch.where(missing, true, weight),
    }
    if fill == "low-rank completion":
        filled, rank = complete_low_rank(weight, missing, generator)
        ranks.append(rank)
        return filled
    if fill not in fills:
        raise ValueError(f"unknown fill {fill!r}; choose from {FILLS}")
    return fills[fill]()
