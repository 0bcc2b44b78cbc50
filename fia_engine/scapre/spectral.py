"""Spectral regularisation of the stacked concept matrix (ScaPre switch ``spectral``).

Stack the concept token embeddings as E_c (n x d_in) = U S V^T. A direction that many
concepts share (a common word, the end token's "a photo" part) gets one large singular
value, so in the plain least squares it outweighs the preserve and ridge terms and the
whole edit bends toward it: many concepts then conflict along one direction. ScaPre
weights the concept term in the singular basis,

    || Phi^1/2 U^T (E_c X - R) ||^2
    phi_k = rho * m / (w_k * s_k^2 + rho * m),   m = median(s^2),

so a shared direction's effective energy w_k s_k^2 phi_k is softly capped at rho * m.

w_k in [0, 1] says how many concepts share direction k (our reading of "against conflicts
between many concepts"): with q_ck the share of direction k's energy that concept c's rows
carry (sum_c q_ck = 1), the effective number of concepts along it is p_k = 1 / sum_c q_ck^2
(1 to C), and w_k = (p_k - 1) / (C - 1). A direction that belongs to one concept (w = 0) keeps
its full weight however strong it is, so a lone concept is erased as by the plain closed
form, and a direction that all concepts share equally (w = 1) is capped. Without concept
labels every token row counts as a concept of its own.
It is still a weighted least-squares problem: its rows are T E_c with T = Phi^1/2 U^T.
"""

from __future__ import annotations

import torch

from ..errors import InvalidInputError


def spectral_filter(sigma: torch.Tensor, rho: float, sharing: torch.Tensor | None = None) -> torch.Tensor:
    """phi = rho * median(s^2) / (w * s^2 + rho * median(s^2)); w = 1 everywhere unless given."""
    energy = sigma.square()
    cap = rho * energy.median()
    shared_energy = energy if sharing is None else sharing * energy
    return cap / (shared_energy + cap)


def concept_sharing(u: torch.Tensor, concept_ids: torch.Tensor) -> torch.Tensor:
    """w_k = (p_k - 1) / (C - 1), p_k the effective number of concepts along column k of U."""
    _, owners = torch.unique(concept_ids, return_inverse=True)
    count = int(owners.max()) + 1
    if count == 1:
        return torch.zeros(u.shape[1], dtype=u.dtype, device=u.device)
    shares = torch.zeros(count, u.shape[1], dtype=u.dtype, device=u.device)
    shares.index_add_(0, owners.to(u.device), u.square())  # columns of U are unit: each column sums to 1
    effective = 1.0 / shares.square().sum(dim=0)
    return ((effective - 1.0) / (count - 1)).clamp(0.0, 1.0)


def spectral_weighting(
    concepts: torch.Tensor, rho: float, concept_ids: torch.Tensor | None = None, tol: float = 1e-7
) -> torch.Tensor:
    """T = Phi^1/2 U^T (k x n): the row weighting of the concept term (k = numerical rank of E_c).

    ``concept_ids`` (n,) names the concept each row belongs to; None: every row its own.
    Directions with a singular value below tol * largest are left out: E_c X cannot reach
    them, so they add only a constant to the objective.
    """
    if concept_ids is None:
        concept_ids = torch.arange(len(concepts))
    concept_ids = torch.as_tensor(concept_ids)
    if concept_ids.shape != (len(concepts),):
        raise InvalidInputError(
            f"concept ids must name one concept per concept token row: got shape {tuple(concept_ids.shape)} "
            f"for {len(concepts)} rows"
        )
    u, sigma, _ = torch.linalg.svd(concepts, full_matrices=False)
    keep = sigma > tol * sigma.max().clamp_min(torch.finfo(sigma.dtype).tiny)
    u, sigma = u[:, keep], sigma[keep]
    phi = spectral_filter(sigma, rho, concept_sharing(u, concept_ids))
    return phi.sqrt().unsqueeze(1) * u.T
