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

The release's own step (bures_form "release", its large-scale pipeline) works on each row's
length and direction: with a = w', r0 = |w|, kappa = max(0, cos(u, w)) and u starting at
a's direction, it sets r = (lam |a| + mu r0 kappa) / (lam + mu) and
u = normalise(lam |a| u_a + mu r0 kappa u_w), repeated ``iters`` times, and returns r u.
lam is the ridge and mu the layer's mean row entropy (below). The result mixes every row
with the original row, so the delta is stored dense.

Entropy blend (switch ``entropy_blend``), as the authors' release does it. Row i's responses
W[i] . e to the concept token rows are scaled to [0, 1] (min to max) and histogrammed into
B bins; H_i is the histogram's entropy over log B. A row whose responses fall into few
bins (low entropy) is read as concept specific and keeps its edit; one that spreads them
evenly is blended back toward the original weights:

    alpha_i = floor + (1 - floor) (1 - H_i),    W_final[i] = W[i] + alpha_i D[i]
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


def release_bures(edited: torch.Tensor, original: torch.Tensor, mu: float, lam: float, iters: int) -> torch.Tensor:
    """The release's radius/direction proximal step, row by row (dense)."""
    if lam + mu <= 0:  # no pull either way
        return edited.clone()
    tiny = torch.finfo(edited.dtype).tiny
    length = edited.norm(dim=1, keepdim=True)
    along = edited / length.clamp_min(tiny)
    radius0 = original.norm(dim=1, keepdim=True)
    along0 = original / radius0.clamp_min(tiny)
    direction = along
    for _ in range(iters):
        kappa = (direction * along0).sum(1, keepdim=True).clamp_min(0.0)
        radius = (lam * length + mu * radius0 * kappa) / (lam + mu)
        pull = lam * length * along + mu * radius0 * kappa * along0
        direction = pull / pull.norm(dim=1, keepdim=True).clamp_min(tiny)
    return radius * direction


def row_response_entropy(weight: torch.Tensor, concepts: torch.Tensor, bins: int) -> torch.Tensor:
    """H_i in [0, 1] per output row: histogram entropy of the row's min-max scaled concept responses."""
    responses = weight @ concepts.T  # (d_out, n)
    low = responses.min(1, keepdim=True).values
    span = responses.max(1, keepdim=True).values - low
    scaled = (responses - low) / span.clamp_min(torch.finfo(responses.dtype).tiny)
    index = (scaled * bins).long().clamp_(0, bins - 1)
    counts = torch.zeros(len(responses), bins, dtype=responses.dtype, device=responses.device)
    counts.scatter_add_(1, index, torch.ones_like(responses))
    q = counts / counts.sum(1, keepdim=True)
    return -torch.special.xlogy(q, q).sum(1) / math.log(bins)


def blend_factors(entropy: torch.Tensor, floor: float) -> torch.Tensor:
    """alpha_i = floor + (1 - floor) * (1 - H_i): the share of its edit each row keeps."""
    return floor + (1.0 - floor) * (1.0 - entropy)
