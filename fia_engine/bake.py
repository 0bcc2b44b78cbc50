"""Bake an FIA mask or a ScaPre edit into an ldm single-file checkpoint: a new file any loader reads.

The checkpoint is streamed (fia_engine.safetensors_stream): only the edited layers are read
into memory, one at a time; every other tensor and the input's metadata are copied as they
are, and a ``fia_bake`` entry recording what was applied is added to the metadata (a JSON
list: baking twice keeps both records). The output is written beside its final name and
renamed into place; the input is only ever read.

What happens to a layer is a Recipe: which layers it edits, what it was made for (checked
like everywhere else: another architecture is refused, another checkpoint warned about),
and a WeightTransform ``(canonical name, stored weight) -> new weight``. A mask is baked as
exact zeros, or with ``fill="decoys"`` as values drawn from each row's kept weights
(fia_engine.decoys), which leaves no zeros to show where the mask was.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import __version__
from .compatibility import MadeForModel
from .decoys import check_fill, decoy_weight, fill_seed, layer_generator
from .errors import InvalidInputError
from .ldm_checkpoint import CROSS_ATTENTION, FFN2, find_checkpoint_layers
from .masks import FIAMask, check_strength
from .output_paths import atomic_file, check_output_file
from .safetensors_stream import read_header, write_streamed
from .scapre.edit import ScaPreEdit, check_scale
from .scapre.layers import weight_mean_abs

logger = logging.getLogger(__name__)

METADATA_KEY = "fia_bake"

WeightTransform = Callable[[str, torch.Tensor], torch.Tensor]
"""(canonical layer name, the weight as stored) -> the new weight, same shape and dtype; the input is not modified."""


@dataclass(frozen=True)
class Recipe:
    """What a bake does: the layers it edits (FFN2 or CROSS_ATTENTION), what it was made for, how."""

    layers: str
    made_for: MadeForModel  # an FIAMask or a ScaPreEdit: its check_compatible guards the bake
    transform: WeightTransform
    record: dict  # written to the output's metadata


def in_float32(function: Callable[[str, torch.Tensor], torch.Tensor]) -> WeightTransform:
    """Run ``function`` on a float32 copy and round back to the stored dtype, as ComfyUI patches weights."""

    def transform(name: str, weight: torch.Tensor) -> torch.Tensor:
        return function(name, weight.to(torch.float32)).to(weight.dtype)

    return transform


def mask_recipe(mask: FIAMask, strength: float = 1.0, fill: str = "zeros", seed: int | None = None) -> Recipe:
    """Prune the mask's weights: W[idx] *= (1 - strength), exact zeros at strength 1; or, with
    ``fill="decoys"`` (strength 1 only), overwrite them with decoys drawn from their rows (``seed``:
    the draw's, not recorded; None draws a fresh one)."""
    strength = check_strength(strength)
    fill = check_fill(fill, strength)
    record = {
        "kind": "fia-mask",
        "strength": strength,
        "fill": fill,
        "pruned": mask.pruned_count,
        "of": mask.total_count,
        "made_for": {"family": mask.family, "fingerprint": mask.fingerprint},
        "mask": mask.metadata,
    }
    if fill == "decoys":
        record["fill_note"] = "pruned weights hold values drawn from their row's kept weights; the seed is not stored"
        seed = fill_seed(seed)

        def transform(name: str, weight: torch.Tensor) -> torch.Tensor:
            return decoy_weight(weight, mask.indices[name], layer_generator(seed, name))

        return Recipe(FFN2, mask, in_float32(transform), record)
    transform = in_float32(lambda name, weight: mask.masked_weight(name, weight, strength))
    return Recipe(FFN2, mask, transform, record)


def edit_recipe(edit: ScaPreEdit, scale: float = 1.0) -> Recipe:
    """Add the edit: W + scale * delta on every to_k / to_v it covers."""
    scale = check_scale(scale)
    record = {
        "kind": "scapre-edit",
        "scale": scale,
        "layers": len(edit.layers),
        "made_for": {"family": edit.family, "fingerprint": edit.fingerprint},
        "edit": edit.metadata,
    }
    return Recipe(CROSS_ATTENTION, edit, lambda name, weight: edit.edited_weight(name, weight, scale), record)


def bake_checkpoint(
    checkpoint: str | os.PathLike, recipe: Recipe, out: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Write ``out``: ``checkpoint`` with ``recipe`` applied to its UNet; returns ``out``."""
    checkpoint, out = Path(checkpoint), Path(out)
    header = read_header(checkpoint)
    check_output_file(out, overwrite=overwrite, what="--out")
    if out.exists() and os.path.samefile(out, checkpoint):
        raise InvalidInputError("--out is the input checkpoint; bake writes a new file and never changes its input")
    layers = find_checkpoint_layers(header, recipe.layers)
    signature = {name: weight_mean_abs(header.read_tensor(key)) for name, key in layers.keys.items()}
    recipe.made_for.check_compatible(layers.shapes, signature, layers.family)
    edited = sorted(set(layers.keys) & set(recipe.made_for.shapes))
    transforms = {layers.keys[name]: _bound(recipe.transform, name) for name in edited}
    metadata = dict(header.metadata)
    records = _earlier_records(metadata.get(METADATA_KEY))
    records.append({**recipe.record, "tool": f"forget-it-all {__version__}", "source": checkpoint.name})
    metadata[METADATA_KEY] = json.dumps(records, default=str)
    with atomic_file(out) as tmp:
        write_streamed(header, tmp, metadata, transforms)
    logger.info("wrote %s: %s on %d layers of %s", out, recipe.record["kind"], len(transforms), checkpoint.name)
    return out


def _bound(transform: WeightTransform, name: str):
    return lambda weight: transform(name, weight)


def _earlier_records(text: str | None) -> list:
    """The records of earlier bakes of this file (a list), or none if there were none or they are unreadable."""
    if not text:
        return []
    try:
        records = json.loads(text)
    except json.JSONDecodeError:
        logger.warning("the checkpoint's %r metadata is not JSON; it is replaced", METADATA_KEY)
        return []
    return records if isinstance(records, list) else [records]
