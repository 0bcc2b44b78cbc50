"""ScaPre on diffusers folders on disk: read the to_k / to_v entries, write an edited copy.

The copy is written like FIA's (fia_engine.diffusers_files): a staging folder beside the
destination, renamed into place at the end; the source folder is only ever read, and only
the cross-attention to_k / to_v weights of the UNet's safetensors files change.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from safetensors import safe_open

from ..diffusers_files import (
    check_copy_paths,
    folder_family,
    unet_weight_files,
    weight_signature_of,
    write_unet_copy,
)
from .edit import ScaPreEdit, check_scale
from .layers import diffusers_to_projection

logger = logging.getLogger(__name__)

_PROJECTION_KEY = re.compile(r"^(.*\.attn2\.to_[kv])\.weight$")


def projection_entries(files: list[Path]) -> dict[str, tuple[Path, str, tuple[int, int]]]:
    """canonical projection -> (file, key, shape), read from the file headers only."""
    found = {}
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                match = _PROJECTION_KEY.match(key)
                if match:
                    try:
                        canonical = diffusers_to_projection(match.group(1))
                    except ValueError:
                        continue
                    found[canonical] = (path, key, tuple(handle.get_slice(key).get_shape()))
    return found


def apply_edit_to_folder(source: str | Path, edit: ScaPreEdit, destination: str | Path, scale: float = 1.0) -> Path:
    """Copy ``source`` to ``destination`` with W + scale * delta in every to_k / to_v the edit covers."""
    scale = check_scale(scale)
    source, destination = check_copy_paths(source, destination)
    layers = projection_entries(unet_weight_files(source))
    shapes = {name: shape for name, (_, _, shape) in layers.items()}
    edit.check_compatible(shapes, weight_signature_of(layers), folder_family(source))
    write_unet_copy(source, destination, layers, lambda name, weight: edit.edited_weight(name, weight, scale))
    logger.info("wrote %s: ScaPre edit on %d projections at scale %.2f", destination, len(layers), scale)
    return destination
