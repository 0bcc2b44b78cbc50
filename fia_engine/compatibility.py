"""Whether a saved mask or edit fits a model: refuse another architecture, warn for another checkpoint.

FIAMask and ScaPreEdit both record the model family, a fingerprint of their layers' shapes and
mean |W| per layer; both check them the same way. Only the wording differs, given by a Wording.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from .errors import MaskMismatchError
from .layers import shape_fingerprint, signatures_match

logger = logging.getLogger(__name__)


class MadeForModel(Protocol):
    """What a saved mask or edit records about the model it was made for."""

    shapes: dict[str, tuple[int, int]]
    family: str
    fingerprint: str
    weight_signature: dict[str, float]


@dataclass(frozen=True)
class Wording:
    """How the messages name what is checked, e.g. for an edit:
    "this ScaPre edit was made for ... other cross-attention layers (edit layers ...).
    Use an edit made for this model's architecture."
    """

    name: str  # after "this": "mask", "ScaPre edit"
    log_name: str  # starts the warning in the log: "FIA mask", "ScaPre edit"
    noun: str  # names its layers and what to use instead: "mask", "edit"
    article: str  # before the noun: "a", "an"
    layers: str  # which layers it covers: "target layers", "cross-attention layers"
    advice: str  # what to watch for on another checkpoint, in the warning's parentheses


def check_compatible(
    made: MadeForModel,
    wording: Wording,
    shapes: dict[str, tuple[int, int]],
    signature: dict[str, float] | None,
    family: str | None,
) -> bool:
    """Raise MaskMismatchError for another family or other layer shapes; warn and return False
    for other weights of the same architecture; return True for the model it was made for.

    The family matters beside the shapes: SD 1.x and SD 2.x have the same FFN2 shapes.
    """
    use_instead = f"Use {wording.article} {wording.noun} made for this model's architecture."
    if family is not None and family != made.family:
        raise MaskMismatchError(
            f"this {wording.name} was made for a {made.family} model, but the model is {family}. {use_instead}"
        )
    if shape_fingerprint(shapes) != made.fingerprint:
        missing = sorted(set(made.shapes) - set(shapes))[:3]
        differing = [n for n in made.shapes if n in shapes and tuple(shapes[n]) != tuple(made.shapes[n])][:3]
        raise MaskMismatchError(
            f"this {wording.name} was made for a {made.family} model with other {wording.layers} "
            f"({wording.noun} layers {made.fingerprint}, model layers {shape_fingerprint(shapes)}; "
            f"missing {missing}, other shapes {differing}). {use_instead}"
        )
    if signature and made.weight_signature and not signatures_match(signature, made.weight_signature):
        logger.warning(
            "%s was made on another checkpoint of the same %s architecture; applying it anyway (%s)",
            wording.log_name,
            made.family,
            wording.advice,
        )
        return False
    return True
