"""Which torch device to run on: the default, and a check of a device the user names."""

from __future__ import annotations

import torch

from .errors import InvalidInputError


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(name: str | None) -> str:
    """``name`` if torch can run on it now (``None``: the default device); InvalidInputError otherwise."""
    if name is None:
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InvalidInputError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return name
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise InvalidInputError(
                f"device {name!r}: no CUDA GPU is available (torch {torch.__version__}, {build}); use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidInputError(f"device {name!r}: there are {torch.cuda.device_count()} CUDA GPU(s), from cuda:0")
        return name
    backend = getattr(torch.backends, device.type, None) or getattr(torch, device.type, None)
    is_available = getattr(backend, "is_available", None)
    if not callable(is_available) or not is_available():
        raise InvalidInputError(f"device {name!r} is not available here; use cpu or cuda")
    return name
