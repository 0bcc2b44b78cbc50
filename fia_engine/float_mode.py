"""Run a computation with IEEE subnormal floats even where the host process flushes them.

A host (a ComfyUI pack, a training script) may call ``torch.set_flush_denormal(True)``. That
sets flush-to-zero / denormals-are-zero on the calling thread only, so one tensor operation
can then treat tiny values as 0 on some threads and not on others. Exact searches over float
bit patterns (sorted_columns.py) stop converging under it, and results would depend on an
unrelated global flag. ``ieee_subnormals`` turns the flag off on this thread for the call and
restores it afterwards.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

_SMALLEST_SUBNORMAL = 1e-45
T = TypeVar("T")


def flushing_subnormals() -> bool:
    """Whether this thread flushes subnormals (a one-element product stays on this thread)."""
    return not bool(torch.tensor([_SMALLEST_SUBNORMAL]) * 1.0 > 0)


def ieee_subnormals(function: Callable[..., T]) -> Callable[..., T]:
    """Decorator: call ``function`` with subnormals kept, then put the thread's mode back."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if not flushing_subnormals():
            return function(*args, **kwargs)
        torch.set_flush_denormal(False)
        try:
            return function(*args, **kwargs)
        finally:
            torch.set_flush_denormal(True)

    return wrapper
