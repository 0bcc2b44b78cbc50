"""Shared file handling of masks and edits: atomic safetensors writes and checked reads (no pickle)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import CorruptMaskError, InvalidInputError


def save_atomic(tensors: dict[str, torch.Tensor], header: dict[str, str], path: str | os.PathLike, prefix: str) -> Path:
    """Write to a temporary name beside ``path`` and move it into place: a failed save leaves
    no partial file and keeps any older file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file(tensors, tmp, metadata=header)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
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
