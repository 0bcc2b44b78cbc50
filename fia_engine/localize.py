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
"""

from __future__ import annotations

import math

import torch

from .errors import InvalidInputError


def check_ratio(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or math.isnan(value) or not 0.0 < value <= 1.0:
        raise InvalidInputError(f"{name} must be a fraction in (0, 1], got {value!r}")
    return float(value)


def step_threshold(saliency: torch.Tensor, r1: float) -> torch.Tensor:
    """tau_t: the value of the k-th largest entry, k = max(1, floor(r1 * numel))."""
    flat = saliency.reshape(-1)
    k = max(1, math.floor(r1 * flat.numel()))
    # kthvalue counts from the smallest: the k-th largest is the (numel - k + 1)-th smallest.
    return torch.kthvalue(flat, flat.numel() - k + 1).values


class StepIntegrator:
    """Streams S_t over the saliency steps and yields A; holds two weight-sized buffers only."""

    def __init__(self, r1: float):
        self.r1 = check_ratio("r1", r1)
        self._sum: torch.Tensor | None = None
        self._hits: torch.Tensor | None = None
        self.steps = 0

    def add(self, saliency: torch.Tensor) -> None:
        saliency = saliency.float()
        above = saliency > step_threshold(saliency, self.r1)
        if self._sum is None:
            self._sum = saliency.clone()
            self._hits = above.to(torch.int16)
        else:
            self._sum += saliency
            self._hits += above
        self.steps += 1

    def result(self) -> torch.Tensor:
        if self._sum is None:
            raise InvalidInputError("no saliency steps were recorded: run at least one saliency step")
        mean = self._sum / self.steps
        peak = mean.max()
        magnitude = mean / peak if peak > 0 else torch.zeros_like(mean)
        return 0.5 * magnitude + 0.5 * (self._hits.float() / self.steps)


def select_neurons(integrated: torch.Tensor, r2: float) -> torch.Tensor:
    """Q = (row-wise top-k) ∩ (layer-wide top-k) ∩ (A > 0), as sorted flat indices (int64)."""
    r2 = check_ratio("r2", r2)
    rows, cols = integrated.shape
    k_global = math.floor(r2 * rows * cols)
    if k_global == 0:
        return torch.empty(0, dtype=torch.long, device=integrated.device)
    k_row = max(1, math.floor(r2 * cols))
    flat = integrated.reshape(-1)
    in_global = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    in_global[torch.topk(flat, k_global, sorted=False).indices] = True
    row_top = torch.topk(integrated, k_row, dim=1, sorted=False).indices
    row_offsets = torch.arange(rows, device=flat.device).unsqueeze(1) * cols
    in_row = torch.zeros_like(in_global)
    in_row[(row_top + row_offsets).reshape(-1)] = True
    return torch.nonzero(in_global & in_row & (flat > 0)).reshape(-1)
