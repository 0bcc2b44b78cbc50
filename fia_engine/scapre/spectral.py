"""Spectral regularisation of the stacked concept matrix (ScaPre switch ``spectral``).

Stack the concept token embeddings as E_c (n x d_in) = U S V^T. A direction that many
concepts share (a common word, the end token's "a photo" part) gets one large singular
value, so in the plain least squares it outweighs the preserve and ridge terms and the
whole edit bends toward it: many concepts then conflict along one direction. ScaPre
weights the concept term in the singular basis,

    || Phi^1/2 U^T (E_c X - R) ||^2,     phi(s) = rho * e / (s^2 + rho * e),

so a direction's effective energy s^2 * phi(s) is softly capped at rho * e. The unit e is
the energy one concept can put into a direction on its own: the mean over concepts of the
largest squared singular value of that concept's rows (our reading; docs/scapre.md). A
direction only exceeds it when several concepts pile onto it, so a lone concept keeps
nearly its whole weight (phi >= rho / (1 + rho)), and a direction shared by about rho
concepts is halved. Without concept labels every token row counts as a concept.
It is still a weighted least-squares problem: its rows are T E_c with T = Phi^1/2 U^T.

The release's own step (spectral_form "release", its --svd): SVD of the stacked concept
rows, a gate g(s) = sigmoid((s - median s) / T_sigma)^p_sigma on the singular values, the
projector P = I - U diag(g) U^T that takes out the gated (leading) directions, and an extra
term in the solve's numerator, -scale W (P C)(P C)^T, which pushes each layer's response
to the concepts' remaining (less shared) part toward zero:

    D_extra = -scale * W (P C) (P C)^T M^-1      (low rank: (P C) has n columns)
"""

from __future__ import annotations

import torch

from ..errors import InvalidInputError


def spectral_filter(sigma: torch.Tensor, rho: float, unit: torch.Tensor | float) -> torch.Tensor:
    """phi(s) = rho * unit / (s^2 + rho * unit): a smooth cap of s^2 * phi(s) at rho * unit."""
    cap = rho * torch.as_tensor(unit, dtype=sigma.dtype, device=sigma.device)
    return cap / (sigma.square() + cap)


def concept_energy(concepts: torch.Tensor, concept_ids: torch.Tensor) -> torch.Tensor:
    """The mean over concepts of the largest squared singular value of each concept's rows."""
    _, owners = torch.unique(concept_ids.to(concepts.device), return_inverse=True)
    tops = [torch.linalg.matrix_norm(concepts[owners == c], ord=2) for c in range(int(owners.max()) + 1)]
    return torch.stack(tops).square().mean()


def check_concept_ids(concept_ids, rows: int) -> torch.Tensor:
    """One integer concept id per concept token row; None: every row a concept of its own."""
    if concept_ids is None:
        return torch.arange(rows)
    concept_ids = torch.as_tensor(concept_ids)
    if concept_ids.shape != (rows,) or concept_ids.is_floating_point() or concept_ids.is_complex():
        raise InvalidInputError(
            f"concept ids must name one concept (an integer) per concept token row: got shape "
            f"{tuple(concept_ids.shape)} ({concept_ids.dtype}) for {rows} rows"
        )
    return concept_ids


def spectral_weighting(
    concepts: torch.Tensor, rho: float, concept_ids: torch.Tensor | None = None, tol: float = 1e-7
) -> torch.Tensor:
    """T = Phi^1/2 U^T (k x n): the row weighting of the concept term (k = numerical rank of E_c).

    ``concept_ids`` (n,) names the concept each row belongs to; None: every row its own.
    Directions with a singular value below tol * largest are left out: E_c X cannot reach
    them, so they add only a constant to the objective.
    """
    concept_ids = check_concept_ids(concept_ids, len(concepts))
    u, sigma, _ = torch.linalg.svd(concepts, full_matrices=False)
    keep = sigma > tol * sigma.max().clamp_min(torch.finfo(sigma.dtype).tiny)
    u, sigma = u[:, keep], sigma[keep]
    phi = spectral_filter(sigma, rho, concept_energy(concepts, concept_ids))
    return phi.sqrt().unsqueeze(1) * u.T


def release_residual(concepts: torch.Tensor, temperature: float, power: float) -> torch.Tensor:
    """(P C)^T (n x d_in): the concept rows without their gated leading singular directions."""
    u, sigma, _ = torch.linalg.svd(concepts.T, full_matrices=False)  # u: d_in x r
    gate = torch.sigmoid((sigma - sigma.median()) / temperature).pow(power)
    return concepts - ((concepts @ u) * gate) @ u.T
