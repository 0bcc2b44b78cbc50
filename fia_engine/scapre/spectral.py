"""Spectral regularisation of the stacked concept matrix (ScaPre switch ``spectral``).

Stack the concept token embeddings as E_c (n x d_in) = U S V^T. A direction that many
concepts share (a common word, the end token's "a photo" part) gets one large singular
value, so in the plain least squares it outweighs the preserve and ridge terms and the
whole edit bends toward it: many concepts then conflict along one direction. ScaPre
weights the concept term in the singular basis,

    || Phi^1/2 U^T (E_c X - R) ||^2     with  phi(s) = rho * m / (s^2 + rho * m),  m = median(s^2),

so a direction's effective energy s^2 * phi(s) is softly capped at rho * m: weak
(concept-specific) directions keep their weight (phi ~ 1), shared ones are attenuated.
It is still a weighted least-squares problem: its rows are T E_c with T = Phi^1/2 U^T.
"""

from __future__ import annotations

import torch


def spectral_filter(sigma: torch.Tensor, rho: float) -> torch.Tensor:
    """phi(s) = rho * median(s^2) / (s^2 + rho * median(s^2)), a smooth cap on s^2 * phi(s)."""
    energy = sigma.square()
    cap = rho * energy.median()
    return cap / (energy + cap)


def spectral_weighting(concepts: torch.Tensor, rho: float, tol: float = 1e-7) -> torch.Tensor:
    """T = Phi^1/2 U^T (k x n): the row weighting of the concept term (k = numerical rank of E_c).

    Directions with a singular value below tol * largest are left out: E_c X cannot reach
    them, so they add only a constant to the objective.
    """
    u, sigma, _ = torch.linalg.svd(concepts, full_matrices=False)
    keep = sigma > tol * sigma.max().clamp_min(torch.finfo(sigma.dtype).tiny)
    u, sigma = u[:, keep], sigma[keep]
    return spectral_filter(sigma, rho).sqrt().unsqueeze(1) * u.T
