"""The large-scale form: a Sylvester equation B X + X A = C with symmetric B and A.

With an output-space regulariser mu * tr(D^T B0 D) added to the closed-form objective
(solve.py), the normal equations in the layer's edit D are no longer one-sided:

    mu B0 D + D M = R^^T C^        (B = mu B0: d_out x d_out, A = M: d_in x d_in)

Both sides are symmetric, so with B = Qb diag(lb) Qb^T and A = Qa diag(la) Qa^T the
equation decouples in the eigenbases: X~_ij = C~_ij / (lb_i + la_j), C~ = Qb^T C Qa,
X = Qb X~ Qa^T. A's factorisation is shared by every layer of one width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InvalidInputError


@dataclass(frozen=True)
class SymmetricEigen:
    values: torch.Tensor
    vectors: torch.Tensor

    @classmethod
    def of(cls, matrix: torch.Tensor) -> SymmetricEigen:
        values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
        return cls(values, vectors)


def solve_sylvester(
    b: torch.Tensor | SymmetricEigen, a: torch.Tensor | SymmetricEigen, c: torch.Tensor
) -> torch.Tensor:
    """X with B X + X A = C for symmetric B (p x p) and A (q x q) whose spectra sum to > 0."""
    b = b if isinstance(b, SymmetricEigen) else SymmetricEigen.of(b)
    a = a if isinstance(a, SymmetricEigen) else SymmetricEigen.of(a)
    denominator = b.values.unsqueeze(1) + a.values.unsqueeze(0)
    scale = denominator.abs().max().clamp_min(torch.finfo(denominator.dtype).tiny)
    if bool((denominator <= torch.finfo(denominator.dtype).eps * scale).any()):
        raise InvalidInputError(
            "the Sylvester equation B X + X A = C is singular (an eigenvalue of B plus one of A is <= 0); "
            "raise ridge above 0"
        )
    rotated = b.vectors.T @ c @ a.vectors
    return b.vectors @ (rotated / denominator) @ a.vectors.T


def output_gram(weight: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """B0: the covariance of the layer's original outputs on ``rows``, normalised to mean eigenvalue 1.

    Penalising tr(D^T B0 D) makes output directions that these prompts use expensive to
    change; the trace normalisation keeps mu on the scale of the ridge (B0 = I would make
    mu an extra ridge).
    """
    outputs = rows @ weight.T
    gram = outputs.T @ outputs
    mean_eigenvalue = gram.trace() / gram.shape[0]
    if float(mean_eigenvalue) <= 0:
        return torch.zeros_like(gram)
    return gram / mean_eigenvalue
