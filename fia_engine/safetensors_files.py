"""Shared file handling of masks and edits: atomic safetensors writes and checked reads (no pickle).

An FIA mask and a ScaPre edit are both "made for a model" files: tensors plus a header of
JSON strings that names the format and its version, the model family, a fingerprint of the
layers' shapes, the layers' shapes, mean |W| per layer and what made the file. The header is
written and read here, once for both; what the tensors hold is checked by each format.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .compatibility import MadeForModel
from .errors import CorruptMaskError, InvalidInputError
from .layers import shape_fingerprint
from .output_paths import atomic_file


@dataclass(frozen=True)
class FileKind:
    """How one format is named in its files and its messages."""

    format: str  # the header's "format": "fia-mask"
    version: int  # the newest version this code reads and writes
    metadata_key: str  # header entry with the JSON of what made the file: "fia"
    title: str  # "FIA mask": "... is not an FIA mask", "... uses FIA mask format 2"
    article: str  # "an"


class ModelFile:
    """save / load for a mask or edit dataclass whose fields are (content, shapes, family,
    fingerprint, weight_signature, metadata); the subclass says how its content is stored."""

    FILE_KIND: ClassVar[FileKind]

    def file_tensors(self) -> dict[str, torch.Tensor]:
        """The content as the tensors of the file."""
        raise NotImplementedError

    def file_entries(self) -> dict[str, str]:
        """Header entries of this kind besides the shared ones (counts, sizes: for a quick look)."""
        return {}

    @staticmethod
    def content_from(path: Path, tensors: dict[str, torch.Tensor], shapes: dict[str, tuple[int, int]]):
        """The content from a file's tensors, checked against the layer shapes (CorruptMaskError)."""
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: a failed save leaves no partial file and keeps any older file intact."""
        return save_made_for_model(path, self.FILE_KIND, self.file_tensors(), self, self.metadata, self.file_entries())

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu"):
        """Read and validate a file (safetensors only, no pickle); CorruptMaskError for a damaged one."""
        tensors, fields = load_made_for_model(path, cls.FILE_KIND, device)
        return cls(cls.content_from(Path(path), tensors, fields["shapes"]), **fields)


def save_made_for_model(
    path: str | os.PathLike,
    kind: FileKind,
    tensors: dict[str, torch.Tensor],
    made: MadeForModel,
    metadata: dict,
    extra: dict[str, str],
) -> Path:
    """Write ``tensors`` atomically with the header: what ``made`` (a mask, an edit) records
    about its model, ``metadata`` (what made the file) and the ``extra`` entries."""
    header = {
        "format": kind.format,
        "format_version": str(kind.version),
        "family": made.family,
        "fingerprint": made.fingerprint,
        "shapes": json.dumps({k: list(v) for k, v in made.shapes.items()}),
        "weight_signature": json.dumps(made.weight_signature),
        kind.metadata_key: json.dumps(metadata, default=str),
        **extra,
    }
    return save_atomic(tensors, header, path)


def load_made_for_model(
    path: str | os.PathLike, kind: FileKind, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors of a ``kind`` file and its checked header fields (shapes, family, fingerprint,
    weight_signature, metadata); CorruptMaskError for anything wrong."""
    path = Path(path)
    tensors, header = read_checked(path, f"{kind.title} file", device)
    if header.get("format") != kind.format:
        raise CorruptMaskError(
            f"{path} is not {kind.article} {kind.title} (format={header.get('format')!r}, expected {kind.format!r})"
        )
    try:
        version = int(header.get("format_version", "0"))
        fields = {
            "shapes": {k: (int(v[0]), int(v[1])) for k, v in json.loads(header["shapes"]).items()},
            "family": header["family"],
            "fingerprint": header["fingerprint"],
            "weight_signature": {k: float(v) for k, v in json.loads(header.get("weight_signature", "{}")).items()},
            "metadata": json.loads(header.get(kind.metadata_key, "{}")),
        }
    except (KeyError, ValueError, TypeError, IndexError) as error:
        raise CorruptMaskError(f"{path} has damaged metadata ({error})") from None
    if version > kind.version:
        raise CorruptMaskError(f"{path} uses {kind.title} format {version}; update the extension to read it")
    if shape_fingerprint(fields["shapes"]) != fields["fingerprint"]:
        raise CorruptMaskError(f"{path}: the stored fingerprint does not match the stored layer shapes")
    return tensors, fields


def save_atomic(tensors: dict[str, torch.Tensor], header: dict[str, str], path: str | os.PathLike) -> Path:
    """Write to a temporary name beside ``path`` and move it into place: a failed save leaves
    no partial file and keeps any older file intact."""
    path = Path(path)
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


def read_checked(path: str | os.PathLike, what: str, device: str | torch.device = "cpu"):
    """(tensors, header) of a safetensors file; a clear error for a missing or unreadable one."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{what} not found: {path}")
    try:
        tensors = load_file(str(path), device=str(device))
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CorruptMaskError(f"{path} is not a readable safetensors file ({error})") from None
    return tensors, header


def file_format(path: str | os.PathLike) -> str | None:
    """The ``format`` entry of a safetensors file's metadata (e.g. "fia-mask", "scapre-edit")."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("format")
    except (SafetensorError, OSError, ValueError) as error:
        raise CorruptMaskError(f"{path} is not a readable safetensors file ({error})") from None
