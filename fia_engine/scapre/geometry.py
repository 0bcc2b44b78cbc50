"""Geometry-preserving steps after the solve: a Bures proximal step per row and the entropy blend.

Bures step (switch ``bures``). Read each output row w as the rank-one covariance w w^T. The
Bures(-Wasserstein) distance between x x^T and w w^T is

    d_B^2 = ||x||^2 + ||w||^2 - 2 |x . w| = min_{s = +-1} ||x - s w||^2,

it sees a row only up to its sign. The proximal step from the edited row w' = w + D[i]

    x = argmin_x ||x - w'||^2 + eta * min_s ||x - s w||^2  =  (w' + eta s w) / (1 + eta),  s = sign(w' . w)

pulls the edited row back toward the original row's geometry. When the edit keeps the row
on w's side (s = +1, the usual case) this shrinks D[i] by 1 / (1 + eta); when it flips the
row (s = -1) the row is pulled toward -w, which has the same covariance, and the delta
gains the term -2 eta / (1 + eta) w.

Entropy blend (switch ``entropy_blend``). The row mask, normalised to a distribution q over
the d_out rows, has normalised entropy H = -sum q log q / log d_out in [0, 1]: 1 when the
update is spread evenly over all rows (not concept specific), small when it sits in a few
rows. The layer's edit is blended back toward the original weights by

    beta = 1 - strength * H,    W_final = W + beta * D     (one beta per layer).
"""

from __future__ import annotations

import math

import torch

from .delta import LayerDelta


def bures_distance(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Row-wise Bures distance between the rank-one covariances x_i x_i^T and w_i w_i^T."""
    squared = x.square().sum(-1) + w.square().sum(-1) - 2 * (x * w).sum(-1).abs()
    return squared.clamp_min(0).sqrt()


def bures_proximal(edited: torch.Tensor, original: torch.Tensor, eta: float) -> torch.Tensor:
    """x_i = argmin ||x - edited_i||^2 + eta * d_B(x, original_i)^2, row by row (dense reference form)."""
    sign = torch.where((edited * original).sum(1, keepdim=True) >= 0, 1.0, -1.0).to(edited.dtype)
    return (edited + eta * sign * original) / (1 + eta)


def bures_step(delta: LayerDelta, weight: torch.Tensor, eta: float) -> tuple[LayerDelta, int]:
    """The Bures proximal step applied to W + D, returned as a new delta; also the number of flipped rows."""
    flipped = torch.nonzero(weight.square().sum(1) + delta.row_dots(weight) < 0).flatten()
    shrunk = delta.scale(1.0 / (1.0 + eta))
    return shrunk.add_rows(flipped, -2.0 * eta / (1.0 + eta), weight[flipped]), int(flipped.numel())


def normalised_entropy(mask: torch.Tensor) -> float:
    """Entropy of mask / sum(mask), divided by log(len): 1 for a uniform mask, 0 for a single row."""
    if mask.numel() < 2 or float(mask.sum()) <= 0:
        return 0.0
    q = mask / mask.sum()
    return float(-torch.special.xlogy(q, q).sum() / math.log(mask.numel()))


def blend_factor(mask: torch.Tensor, strength: float) -> float:
    """beta = 1 - strength * normalised_entropy(mask)."""
    return 1.0 - strength * normalised_entropy(mask)
