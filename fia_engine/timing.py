"""Wall-clock seconds per named phase of a run (the CLI prints them with -v)."""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch


class PhaseTimer:
    """Adds up the seconds spent in each named phase, in the order the phases first ran.

    On a CUDA device the device is synchronised at the end of each phase, so that work queued
    in one phase is not counted in the next.
    """

    def __init__(self, device: str | torch.device | None = None):
        self.seconds: dict[str, float] = {}
        self._cuda = device is not None and torch.device(device).type == "cuda"

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            if self._cuda:
                torch.cuda.synchronize()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def summary(self) -> str:
        parts = [f"{name} {seconds:.2f} s" for name, seconds in self.seconds.items()]
        parts.append(f"total {self.total:.2f} s")
        if self._cuda:
            parts.append(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
        return ", ".join(parts)
