"""Write an unlearned copy of a diffusers folder: the source folder is only ever read.

The copy is assembled in a temporary folder beside the destination and moved into place
at the end, so a failure leaves neither a partial destination nor a changed source.
Only the UNet's safetensors files are rewritten, and in them only the edited layers (FIA: the
FFN2 weights; ScaPre: the cross-attention to_k / to_v, see fia_engine/scapre/files.py). A
``SHA256SUMS`` list in the source (``sha256sum -c`` format) is copied with the rewritten
files' lines brought up to date, so that the copy verifies.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .errors import InvalidInputError
from .layers import diffusers_to_canonical, family_of
from .masks import FIAMask, check_strength
from .output_paths import atomic_dir, check_output_dir

logger = logging.getLogger(__name__)

_FFN2_KEY = re.compile(r"^(.*\.ff\.net\.2)\.weight$")
CHECKSUMS = "SHA256SUMS"


def unet_weight_files(folder: Path) -> list[Path]:
    unet = folder / "unet"
    files = sorted(unet.glob("*.safetensors"))
    if not files:
        pickled = sorted(p.name for p in unet.glob("*.bin"))
        hint = f" (found {pickled}: convert them to safetensors first)" if pickled else ""
        raise InvalidInputError(f"{unet} holds no .safetensors weights{hint}")
    return files


def ffn2_weights(files: list[Path]) -> dict[str, tuple[Path, str, tuple[int, int]]]:
    """canonical layer -> (file, key, shape), read from the file headers only."""
    found = {}
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                match = _FFN2_KEY.match(key)
                if match:
                    try:
                        canonical = diffusers_to_canonical(match.group(1))
                    except ValueError:
                        continue
                    found[canonical] = (path, key, tuple(handle.get_slice(key).get_shape()))
    return found


def weight_signature_of(files: dict[str, tuple[Path, str, tuple[int, int]]]) -> dict[str, float]:
    """Mean |W| per layer of (file, key, shape) entries, as the masks and edits record it."""
    signature = {}
    for canonical, (path, key, _) in files.items():
        with safe_open(str(path), framework="pt") as handle:
            signature[canonical] = float(f"{handle.get_tensor(key).float().abs().mean().item():.6g}")
    return signature


def check_copy_paths(source: str | Path, destination: str | Path) -> tuple[Path, Path]:
    """Refuse a source without a UNet, a destination that exists or cannot be written, or one inside the source."""
    source, destination = Path(source), Path(destination)
    if not (source / "unet").is_dir():
        raise InvalidInputError(f"{source} is not a diffusers folder: it has no 'unet/' subfolder")
    check_output_dir(destination, exist_ok=False)
    if destination.resolve().is_relative_to(source.resolve()):
        raise InvalidInputError("the output folder must not lie inside the source folder")
    return source, destination


def folder_family(source: Path) -> str:
    config = json.loads((source / "unet" / "config.json").read_text())
    return family_of(int(config.get("cross_attention_dim") or 0))


def write_unet_copy(
    source: Path,
    destination: Path,
    layers: dict[str, tuple[Path, str, tuple[int, int]]],
    new_weight: Callable[[str, torch.Tensor], torch.Tensor],
) -> Path:
    """Copy ``source`` to ``destination`` with ``new_weight(canonical, old)`` written for each listed layer.

    Everything is assembled in a staging folder beside the destination and renamed into place.
    """
    with atomic_dir(destination) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        by_file: dict[Path, list[str]] = {}
        for canonical, (path, _, _) in layers.items():
            by_file.setdefault(path, []).append(canonical)
        for path, canonicals in by_file.items():
            with safe_open(str(path), framework="pt") as handle:
                header = handle.metadata()
            tensors = load_file(str(path))
            for canonical in canonicals:
                key = layers[canonical][1]
                tensors[key] = new_weight(canonical, tensors[key])
            save_file(tensors, str(staging / "unet" / path.name), metadata=header)
        _update_checksums(staging, [f"unet/{path.name}" for path in by_file])
    return destination


def _update_checksums(folder: Path, rewritten: list[str]) -> None:
    """Bring the lines of ``rewritten`` files in ``folder/SHA256SUMS`` (if any) up to date."""
    checksums = folder / CHECKSUMS
    if not checksums.is_file():
        return
    lines = []
    for line in checksums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name.lstrip("*") in rewritten:
            digest = sha256_of(folder / name.lstrip("*"))
        lines.append(f"{digest}  {name}" if name else line)
    checksums.write_text("\n".join(lines) + "\n")


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def apply_mask_to_folder(source: str | Path, mask: FIAMask, destination: str | Path, strength: float = 1.0) -> Path:
    """Copy ``source`` to ``destination`` with the mask's weights pruned in the UNet."""
    strength = check_strength(strength)
    source, destination = check_copy_paths(source, destination)
    layers = ffn2_weights(unet_weight_files(source))
    shapes = {name: shape for name, (_, _, shape) in layers.items()}
    mask.check_compatible(shapes, weight_signature_of(layers), folder_family(source))
    write_unet_copy(source, destination, layers, lambda name, weight: mask.masked_weight(name, weight, strength))
    logger.info(
        "wrote %s: %d weights pruned (%.4f %%) at strength %.2f",
        destination,
        mask.pruned_count,
        100 * mask.pruned_fraction,
        strength,
    )
    return destination


def unet_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in unet_weight_files(folder):
        tensors.update(load_file(str(path)))
    return tensors
