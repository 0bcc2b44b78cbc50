"""Neuron localisation over a whole model: ConceptSaliency -> per concept, per layer, the set Q."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import InvalidInputError
from .localize import StepIntegrator, check_ratio, select_neurons
from .saliency import ConceptSaliency


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


def integrated_saliency(saliency: ConceptSaliency, layer: str, concept_index: int, r1: float) -> torch.Tensor:
    """A of one concept in one layer (fast mode rebuilds each S_t from |W| and column scores)."""
    data = saliency.layers[layer]
    if saliency.mode == "exact":
        return data.integrated[concept_index]
    integrator = StepIntegrator(r1)
    weight_abs = data.weight_abs.float()
    for step_scores in data.column_scores[concept_index]:
        integrator.add(weight_abs * step_scores.unsqueeze(0))
    return integrator.result()


def localize_concepts(
    saliency: ConceptSaliency,
    r1: float = 0.05,
    r2: float = 0.01,
    r2_per_concept: dict[str, float] | None = None,
) -> ConceptMasks:
    """Stage 2 for every concept and layer of a collection."""
    r1 = check_ratio("r1", r1)
    if saliency.mode == "exact" and saliency.r1 is not None and abs(saliency.r1 - r1) > 1e-12:
        raise InvalidInputError(
            f"exact-mode saliency was time-integrated with r1={saliency.r1}; r1={r1} needs a new "
            "collection (or use fast mode, where r1 can change freely)"
        )
    ratios = resolve_r2(saliency.concepts, r2, r2_per_concept)
    indices = {
        concept: {
            layer: select_neurons(integrated_saliency(saliency, layer, c, r1), ratios[concept])
            for layer in saliency.layers
        }
        for c, concept in enumerate(saliency.concepts)
    }
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
