"""Stage 3 of FIA: merge per-concept sets, sparing weights that many concepts share.

    s[i,j]  = number of concepts whose Q contains (i,j)
    tau_ca  = max(2, ceil(alpha * C))
    pruned  = { (i,j) : 0 < s[i,j] < tau_ca }

Single-concept rule: the paper's tau_ca = ceil(alpha * C) is 1 for one concept (and for any
alpha * C <= 1), which would keep every selected weight and prune nothing. A weight counts as
concept-agnostic only when at least two concepts share it, hence the floor of 2: one concept
prunes its whole Q, and two concepts with a small alpha still spare what they share.
With ``protect_agnostic=False`` every selected weight is pruned (plain union of masks, the
ConceptPrune-like ablation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .errors import InvalidInputError, MaskMismatchError
from .localize import check_ratio
from .masks import FIAMask
from .neurons import ConceptMasks
from .ranking import sort_integers


def agnostic_threshold(alpha: float, num_concepts: int) -> int:
    """tau_ca; the small epsilon keeps 0.28 * 25 = 7.000000000000001 from rounding up to 8."""
    return max(2, math.ceil(alpha * num_concepts - 1e-9))


def _merge_inputs(inputs: Sequence[ConceptMasks]) -> tuple[ConceptMasks, list[str], list[dict[str, torch.Tensor]]]:
    if not inputs:
        raise InvalidInputError("fusion needs at least one set of concept masks")
    first = inputs[0]
    concepts, per_concept = [], []
    for masks in inputs:
        if masks.fingerprint != first.fingerprint:
            raise MaskMismatchError(
                f"concept masks from different models cannot be fused ({first.family} layers "
                f"{first.fingerprint} vs {masks.family} layers {masks.fingerprint})"
            )
        for concept in masks.concepts:
            if concept in concepts:
                raise InvalidInputError(
                    f"concept {concept!r} comes twice into the fusion; it would be counted twice "
                    "towards the agnostic threshold. Remove one of the duplicates."
                )
            concepts.append(concept)
            per_concept.append(masks.indices[concept])
    return first, concepts, per_concept


def fuse(inputs: ConceptMasks | Sequence[ConceptMasks], alpha: float = 0.6, protect_agnostic: bool = True) -> FIAMask:
    """Fuse the concept masks of one or more collections (same model) into one FIAMask."""
    if isinstance(inputs, ConceptMasks):
        inputs = [inputs]
    alpha = check_ratio("alpha", alpha)
    first, concepts, per_concept = _merge_inputs(inputs)
    threshold = agnostic_threshold(alpha, len(concepts)) if protect_agnostic else len(concepts) + 1
    pruned, agnostic_kept = {}, 0
    for layer in first.shapes:
        members = [masks[layer] for masks in per_concept]
        device = members[0].device
        # Sorted with numpy on a CPU (several times faster than torch.unique), then run lengths.
        merged = sort_integers(torch.cat([m.to(device) for m in members]))
        values, counts = torch.unique_consecutive(merged, return_counts=True)
        pruned[layer] = values[counts < threshold]
        agnostic_kept += int((counts >= threshold).sum())
    r2: dict[str, float] = {}
    for masks in inputs:
        r2.update(masks.r2)
    metadata = {
        "method": "fia",
        "concepts": concepts,
        "mode": first.mode,
        "r1": first.r1,
        "r2": r2,
        "alpha": alpha,
        "protect_agnostic": protect_agnostic,
        "agnostic_threshold": threshold,
        "agnostic_kept": agnostic_kept,
        "selected_per_concept": {
            c: sum(int(i.numel()) for i in m.values()) for c, m in zip(concepts, per_concept, strict=True)
        },
        "settings": first.settings,
    }
    return FIAMask(
        indices=pruned,
        shapes=dict(first.shapes),
        family=first.family,
        fingerprint=first.fingerprint,
        weight_signature=dict(first.weight_signature),
        metadata=metadata,
    )
