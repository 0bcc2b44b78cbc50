"""Stage 2 of FIA: from per-step saliency S_t to the concept-sensitive weight set Q of one layer.

    tau_t = k-th largest entry of S_t, k = max(1, floor(r1 * numel))
    A     = 1/2 * mean_t(S_t) / max(mean_t(S_t)) + 1/2 * mean_t(1[S_t > tau_t])
    C     = per output row, top max(1, floor(r2 * C_in)) entries of A
    G     = layer-wide top floor(r2 * C_out * C_in) entries of A
    Q     = C ∩ G, restricted to A > 0

Choices (the paper is silent or loose here):
- The paper adds the two halves of A without normalising; the mean saliency is divided by
  its layer maximum so that both halves lie on [0, 1] and weigh the same.
- A weight whose A is 0 never showed any concept saliency and is never selected, even when
  a top-k would reach into the zeros.
- Ties at a top-k boundary go to the lower flat index (row-major; in a row, the lower
  column), so Q depends on the values of A alone.

This module works on dense matrices (exact mode, and the reference for everything);
fast_localize.py computes the same for fast-mode saliency without dense per-step matrices.
"""

from __future__ import annotations

import math

import torch

from .errors import InvalidInputError
from .ranking import dense_top_list, kth_largest


def check_ratio(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or math.isnan(value) or not 0.0 < value <= 1.0:
        raise InvalidInputError(f"{name} must be a fraction in (0, 1], got {value!r}")
    return float(value)


def step_count(r1: float, numel: int) -> int:
    """k of the per-step threshold: max(1, floor(r1 * numel))."""
    return max(1, math.floor(r1 * numel))


def step_threshold(saliency: torch.Tensor, r1: float) -> torch.Tensor:
    """tau_t: the value of the k-th largest entry, k = max(1, floor(r1 * numel))."""
    return kth_largest(saliency, step_count(r1, saliency.numel())).to(saliency.device)


def integrated_value(mean: torch.Tensor, peak: torch.Tensor, hits: torch.Tensor, steps: int) -> torch.Tensor:
    """A = 1/2 * mean / peak + 1/2 * hits / steps, element by element (0 for the first half if peak is 0).

    The one expression every path uses, dense or gathered, so that all give the same bits.
    """
    magnitude = torch.where(peak > 0, mean / peak, torch.zeros_like(mean))
    return 0.5 * magnitude + 0.5 * (hits.float() / steps)


class StepIntegrator:
    """Streams S_t over the saliency steps and yields A; holds two weight-sized buffers only."""

    def __init__(self, r1: float):
        self.r1 = check_ratio("r1", r1)
        self._sum: torch.Tensor | None = None
        self._hits: torch.Tensor | None = None
        self._above: torch.Tensor | None = None
        self.steps = 0

    def add(self, saliency: torch.Tensor) -> None:
        saliency = saliency.float()
        threshold = step_threshold(saliency, self.r1)
        if self._sum is None:
            self._sum = saliency.clone()
            self._hits = torch.zeros_like(saliency, dtype=torch.int16)
            self._above = torch.empty_like(saliency, dtype=torch.bool)
        else:
            self._sum += saliency
        self._hits += torch.gt(saliency, threshold, out=self._above)  # buffers reused: no per-step allocation
        self.steps += 1

    def result(self) -> torch.Tensor:
        if self._sum is None:
            raise InvalidInputError("no saliency steps were recorded: run at least one saliency step")
        mean = self._sum / self.steps
        return integrated_value(mean, mean.max(), self._hits, self.steps)


def select_neurons(integrated: torch.Tensor, r2: float) -> torch.Tensor:
    """Q = (row-wise top-k) ∩ (layer-wide top-k) ∩ (A > 0), as sorted flat indices (int64)."""
    r2 = check_ratio("r2", r2)
    rows, cols = integrated.shape
    k_global, k_row = selection_counts(r2, rows, cols)
    return dense_top_list(integrated, k_global).select(k_global, k_row)


def selection_counts(r2: float, rows: int, cols: int) -> tuple[int, int]:
    """(layer-wide k, per-row k) of the spatial selection."""
    return math.floor(r2 * rows * cols), max(1, math.floor(r2 * cols))
