"""Neuron localisation over a whole model: ConceptSaliency -> per concept, per layer, the set Q.

What depends only on the collection and r1 is kept on the ConceptSaliency (``cache``): per
layer the column order of |W| (fast mode), the step thresholds for r1 (fast mode) and, per
concept, the top list of its integrated saliency A (ranking.TopList), long enough for r2 up
to GROWTH times the one asked for. A later call with another r2 (or the fusion's alpha,
which localisation never sees) only reads the lists: no selection over weight-sized tensors.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .errors import InvalidInputError
from .fast_localize import integrate_densely, step_hits, top_lists
from .float_mode import ieee_subnormals
from .localize import check_ratio, selection_counts
from .ranking import TopList, dense_top_list
from .saliency import ConceptSaliency
from .sorted_columns import ColumnOrder

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
GROWTH = 1.5  # top lists cover this many times the r2 asked for, so nearby r2 reuse them
# Below this many weights x steps per concept, a layer's A is integrated step matrix by step
# matrix: the same numbers, and cheaper than the sorted-column search's fixed costs.
DENSE_BELOW = 2**22


@dataclass
class ConceptMasks:
    """Per concept, per canonical layer: sorted flat indices (int64) of its sensitive weights Q."""

    concepts: tuple[str, ...]
    indices: dict[str, dict[str, torch.Tensor]]
    family: str
    shapes: dict[str, tuple[int, int]]
    fingerprint: str
    weight_signature: dict[str, float]
    mode: str
    r1: float
    r2: dict[str, float]
    settings: dict = field(default_factory=dict)

    def count(self, concept: str) -> int:
        return sum(int(idx.numel()) for idx in self.indices[concept].values())


def resolve_r2(concepts: tuple[str, ...], r2: float, overrides: dict[str, float] | None) -> dict[str, float]:
    """r2 for every concept: the default, or the concept's own override."""
    check_ratio("r2", r2)
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(concepts)
    if unknown:
        raise InvalidInputError(
            f"r2 overrides name concepts that were not collected: {sorted(unknown)}; collected: {list(concepts)}"
        )
    for concept, value in overrides.items():
        check_ratio(f"r2 for {concept!r}", value)
    return {concept: float(overrides.get(concept, r2)) for concept in concepts}


def _column_order(saliency: ConceptSaliency, layer: str) -> ColumnOrder:
    key = ("order", layer)
    if key not in saliency.cache:
        saliency.cache[key] = ColumnOrder.of(saliency.layers[layer].weight_abs)
    return saliency.cache[key]


def _step_hits(saliency: ConceptSaliency, layer: str, r1: float):
    key = ("hits", layer, r1)
    if key not in saliency.cache:
        scores = saliency.layers[layer].column_scores
        saliency.cache[key] = step_hits(_column_order(saliency, layer), scores, r1)
    return saliency.cache[key]


def integrated_saliency(saliency: ConceptSaliency, layer: str, concept_index: int, r1: float) -> torch.Tensor:
    """A of one concept in one layer as a dense matrix (for inspection; selection never needs it)."""
    data = saliency.layers[layer]
    if saliency.mode == "exact":
        return data.integrated[concept_index]
    return integrate_densely(data.weight_abs, data.column_scores[concept_index], r1)


def _forget_other_r1(saliency: ConceptSaliency, r1: float) -> None:
    """Thresholds and top lists of another r1 are not needed again soon; the column orders stay."""
    for key in [k for k in saliency.cache if k[0] in ("hits", "tops") and k[2] != r1]:
        del saliency.cache[key]


def _top_lists(saliency: ConceptSaliency, layer: str, r1: float, needed: list[int]) -> list[TopList]:
    """The cached top lists of a layer, (re)built for the concepts whose list is too short."""
    key = ("tops", layer, r1)
    lists = saliency.cache.get(key) or [None] * len(needed)
    short = [c for c, count in enumerate(needed) if lists[c] is None or lists[c].count < count]
    if short:
        rows, cols = saliency.shapes[layer]
        counts = [min(rows * cols, math.ceil(needed[c] * GROWTH)) if c in short else 0 for c in range(len(needed))]
        data = saliency.layers[layer]
        if saliency.mode == "exact":
            built = {c: dense_top_list(data.integrated[c], counts[c]) for c in short}
        elif rows * cols * data.column_scores.shape[1] < DENSE_BELOW:
            dense = {c: integrate_densely(data.weight_abs, data.column_scores[c], r1) for c in short}
            built = {c: dense_top_list(dense[c], counts[c]) for c in short}
        else:
            order, hits = _column_order(saliency, layer), _step_hits(saliency, layer, r1)
            fresh = top_lists(order, hits, torch.tensor(counts))
            built = {c: fresh[c] for c in short}
        lists = [built.get(c, lists[c]) for c in range(len(needed))]
        saliency.cache[key] = lists
    return lists


@ieee_subnormals
def localize_concepts(
    saliency: ConceptSaliency,
    r1: float = 0.05,
    r2: float = 0.01,
    r2_per_concept: dict[str, float] | None = None,
    progress: Progress | None = None,
) -> ConceptMasks:
    """Stage 2 for every concept and layer of a collection.

    ``progress(done, total)`` is called after each layer whose thresholds or top lists had to
    be computed (nothing is reported when everything came from the cache).
    """
    r1 = check_ratio("r1", r1)
    if saliency.mode == "exact" and saliency.r1 is not None and abs(saliency.r1 - r1) > 1e-12:
        raise InvalidInputError(
            f"exact-mode saliency was time-integrated with r1={saliency.r1}; r1={r1} needs a new "
            "collection (or use fast mode, where r1 can change freely)"
        )
    ratios = resolve_r2(saliency.concepts, r2, r2_per_concept)
    _forget_other_r1(saliency, r1)
    counts = {
        layer: [selection_counts(ratios[c], *saliency.shapes[layer]) for c in saliency.concepts]
        for layer in saliency.layers
    }
    pending = [layer for layer in saliency.layers if _needs_work(saliency, layer, r1, counts[layer])]
    indices: dict[str, dict[str, torch.Tensor]] = {concept: {} for concept in saliency.concepts}
    for layer in saliency.layers:
        lists = _top_lists(saliency, layer, r1, [k_global for k_global, _ in counts[layer]])
        for concept, top, (k_global, k_row) in zip(saliency.concepts, lists, counts[layer], strict=True):
            indices[concept][layer] = top.select(k_global, k_row)
        if progress and layer in pending:
            progress(pending.index(layer) + 1, len(pending))
    return ConceptMasks(
        concepts=saliency.concepts,
        indices=indices,
        family=saliency.family,
        shapes=dict(saliency.shapes),
        fingerprint=saliency.fingerprint,
        weight_signature=dict(saliency.weight_signature),
        mode=saliency.mode,
        r1=r1,
        r2=ratios,
        settings=dict(saliency.settings),
    )


def _needs_work(saliency: ConceptSaliency, layer: str, r1: float, counts: list[tuple[int, int]]) -> bool:
    lists = saliency.cache.get(("tops", layer, r1))
    return lists is None or any(top is None or top.count < k for top, (k, _) in zip(lists, counts, strict=True))
