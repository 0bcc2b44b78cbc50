"""Concept and base prompts, and the batch layout that runs them in one denoising pass.

Sample k of concept c is ``concept_template.format(concept=c, context=contexts[k])`` and is
matched with base sample k, ``base_template.format(context=contexts[k])``: same context, same
initial noise, only the concept differs. Base samples that are identical for several
concepts (the usual case: the base template does not mention the concept) are run once and
shared, so C concepts with K pairs cost C*K + K rows, not 2*C*K.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from .errors import InvalidInputError
from .saliency import GroupPlan

# Our own word lists; users can pass their own `contexts`.
PLACES = (
    "kitchen",
    "garden",
    "forest",
    "city street",
    "living room",
    "beach",
    "mountain valley",
    "parking lot",
    "library",
    "park",
    "desert",
    "office",
    "field of grass",
    "snowy road",
    "train station",
    "farmyard",
    "classroom",
    "riverbank",
    "market square",
    "bedroom",
    "harbor",
    "meadow",
    "workshop",
    "museum hall",
    "backyard",
    "rainy alley",
    "lake shore",
    "playground",
    "stadium",
    "country road",
)
THINGS = (
    "portrait of a woman",
    "landscape with hills",
    "city at night",
    "bowl of fruit",
    "cat",
    "lighthouse by the sea",
    "old man reading",
    "field of flowers",
    "sailing ship",
    "bridge over a river",
    "horse in a meadow",
    "village street",
    "mountain lake",
    "dancer",
    "forest path",
    "still life with a vase",
    "harbor at dawn",
    "child with a kite",
    "castle on a hill",
    "garden in spring",
    "winter scene",
    "market stall",
    "cafe terrace",
    "self-portrait",
    "sunset over the ocean",
    "dog sleeping",
    "church in a village",
    "tree in autumn",
    "couple walking",
    "rainy street",
)
PERSONS = (
    "woman",
    "man",
    "young woman",
    "young man",
    "person on a beach",
    "woman in a bedroom",
    "man in a studio",
    "woman standing by a window",
    "man sitting on a bed",
    "couple",
    "model posing",
    "woman lying on a sofa",
    "man at the pool",
    "woman in a garden",
    "dancer",
    "athlete",
    "woman in the shower",
    "man in a forest",
    "woman with long hair",
    "man with a beard",
    "person in a park",
    "woman on a balcony",
    "man by the sea",
    "woman in a hotel room",
    "person sunbathing",
    "woman sitting on a chair",
    "man walking",
    "group of friends",
    "woman at a lake",
    "man in a gym",
)

KINDS = {
    "object": (
        (("a {concept} in a {context}", "a {context}"), ("a {concept} near the {context}", "a {context}")),
        PLACES,
    ),
    "style": ((("a {context} in the style of {concept}", "a {context}"),), THINGS),
    "explicit": ((("a photo of a {concept} {context}", "a photo of a {context}"),), PERSONS),
}
_ALLOWED_FIELDS = {"concept", "context"}


@dataclass(frozen=True)
class PromptSample:
    text: str
    noise_index: int
    group: int


@dataclass(frozen=True)
class PromptPlan:
    samples: tuple[PromptSample, ...]
    groups: GroupPlan

    @property
    def texts(self) -> list[str]:
        return [sample.text for sample in self.samples]


def parse_concepts(text_or_list) -> tuple[str, ...]:
    """Concepts from a list, or from text with one concept per line or comma-separated."""
    if isinstance(text_or_list, str):
        separator = "\n" if "\n" in text_or_list else ","
        items = text_or_list.split(separator)
    else:
        items = list(text_or_list)
    concepts = tuple(item.strip() for item in items if item and item.strip())
    if not concepts:
        raise InvalidInputError("the concept list is empty: give at least one concept to unlearn")
    seen = set()
    for concept in concepts:
        if concept.lower() in seen:
            raise InvalidInputError(f"concept {concept!r} is listed twice; list every concept once")
        seen.add(concept.lower())
    return concepts


def _check_template(template: str, required: set[str], what: str) -> None:
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    unknown = fields - _ALLOWED_FIELDS
    if unknown:
        raise InvalidInputError(
            f"{what} {template!r} uses unknown placeholders {sorted(unknown)}; use {{concept}} and {{context}}"
        )
    missing = required - fields
    if missing:
        raise InvalidInputError(
            f"{what} {template!r} must contain {' and '.join('{' + m + '}' for m in sorted(missing))}"
        )


def resolve_templates(
    kind: str,
    concept_template: str | None = None,
    base_template: str | None = None,
    contexts: list[str] | tuple[str, ...] | None = None,
) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """(template pairs, contexts) for a kind; 'custom' takes the user's templates."""
    if kind == "custom":
        if not concept_template or not base_template:
            raise InvalidInputError("kind 'custom' needs both a concept template and a base template")
        templates: tuple[tuple[str, str], ...] = ((concept_template, base_template),)
        default_contexts = PLACES
    elif kind in KINDS:
        templates, default_contexts = KINDS[kind]
        if concept_template or base_template:
            templates = ((concept_template or templates[0][0], base_template or templates[0][1]),)
    else:
        raise InvalidInputError(f"kind must be one of {sorted(KINDS) + ['custom']}, got {kind!r}")
    for concept_t, base_t in templates:
        _check_template(concept_t, {"concept"}, "concept template")
        _check_template(base_t, set(), "base template")
    contexts = tuple(c.strip() for c in (contexts or default_contexts) if c and c.strip())
    if not contexts:
        raise InvalidInputError("the context list is empty")
    return templates, contexts


def build_prompt_plan(
    concepts,
    kind: str = "object",
    pairs: int = 10,
    concept_template: str | None = None,
    base_template: str | None = None,
    contexts=None,
) -> PromptPlan:
    """All samples of one collection, in row order: every concept's samples, then shared bases."""
    concepts = parse_concepts(concepts)
    if not isinstance(pairs, int) or pairs < 1:
        raise InvalidInputError(f"pairs must be a whole number >= 1, got {pairs!r}")
    templates, contexts = resolve_templates(kind, concept_template, base_template, contexts)
    samples: list[PromptSample] = []
    base_rows: dict[tuple[tuple[str, int], ...], int] = {}
    base_of_concept: list[tuple[tuple[str, int], ...]] = []
    for group, concept in enumerate(concepts):
        bases = []
        for k in range(pairs):
            concept_t, base_t = templates[k % len(templates)]
            context = contexts[k % len(contexts)]
            samples.append(PromptSample(concept_t.format(concept=concept, context=context), k, group))
            bases.append((base_t.format(concept=concept, context=context), k))
        base_of_concept.append(tuple(bases))
    base_groups = []
    for bases in base_of_concept:
        if bases not in base_rows:
            group = len(concepts) + len(base_rows)
            base_rows[bases] = group
            samples.extend(PromptSample(text, k, group) for text, k in bases)
        base_groups.append(base_rows[bases])
    return PromptPlan(
        samples=tuple(samples),
        groups=GroupPlan(concepts=concepts, concept_groups=tuple(range(len(concepts))), base_groups=tuple(base_groups)),
    )
