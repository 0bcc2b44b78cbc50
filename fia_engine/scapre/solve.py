"""The closed-form key/value edit (UCE family), solved once for all layers of one width.

For a layer W (d_out x d_in) and its edit D = W' - W, with concept rows E_c (n x d_in),
anchor rows E_a at the same token positions (targets V* = E_a W^T, the anchor's outputs
under the original weights) and preserve rows E_p (m x d_in):

    min_D  || T (E_c D^T - R) ||^2 + lam || E_p D^T ||^2 + gamma || D ||_F^2,   R = V* - E_c W^T

T is the identity in mode "uce" and the spectral weighting in mode "scapre". Writing
C^ = T E_c and R^ = T R = T (E_a - E_c) W^T, the normal equations give

    D = R^^T C^ M^-1,    M = C^^T C^ + lam E_p^T E_p + gamma I    (d_in x d_in)

so D = up @ down with up = W (T (E_a - E_c))^T (d_out x k) and down = C^ M^-1 (k x d_in):
rank <= k <= n. With the row mask in its "target" form each row's target is scaled,
V*[j, i] -> m[i, j] V*[j, i], and up = (m * (W E_a^T) - W E_c^T) T^T: still rank <= k.
M, its Cholesky factor and ``down`` depend only on the token embeddings, so one solve
serves every to_k and to_v; each layer costs one (d_out x d_in x k) product.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InvalidInputError


@dataclass(frozen=True)
class ConceptSystem:
    """What every layer of one input width shares."""

    rows: torch.Tensor  # C^ = T E_c (k x d_in): the weighted concept rows
    shift: torch.Tensor  # T (E_a - E_c) (k x d_in): a layer's weighted residual is shift @ W^T
    gram: torch.Tensor  # M (d_in x d_in), symmetric positive definite
    down: torch.Tensor  # C^ M^-1 (k x d_in)
    concepts: torch.Tensor  # E_c (n x d_in), unweighted, for scaled targets
    anchors: torch.Tensor  # E_a (n x d_in)
    weighting: torch.Tensor | None  # T (k x n), None for the identity
    factor: torch.Tensor  # Cholesky factor of M

    def times_inverse(self, rows: torch.Tensor) -> torch.Tensor:
        """rows M^-1 (r x d_in), by the stored factor."""
        return torch.cholesky_solve(rows.T, self.factor).T

    def up(self, weight: torch.Tensor, target_scale: torch.Tensor | None = None) -> torch.Tensor:
        """R^^T (d_out x k): the layer's half of the low-rank edit.

        target_scale (d_out x n) multiplies the anchor's outputs, entry by entry, before the
        residual is taken: the row mask's "target" form.
        """
        if target_scale is None:
            return weight @ self.shift.T
        residual = target_scale * (weight @ self.anchors.T) - weight @ self.concepts.T
        return residual if self.weighting is None else residual @ self.weighting.T

    def rhs(self, weight: torch.Tensor, target_scale: torch.Tensor | None = None) -> torch.Tensor:
        """R^^T C^ (d_out x d_in): the right-hand side of the layer's normal equations."""
        return self.up(weight, target_scale) @ self.rows


def build_system(
    concepts: torch.Tensor,
    anchors: torch.Tensor,
    preserve: torch.Tensor | None,
    preserve_weight: float,
    ridge: float,
    weighting: torch.Tensor | None = None,
) -> ConceptSystem:
    """Assemble M and solve it once (Cholesky; never an explicit inverse)."""
    rows, shift = concepts, anchors - concepts
    if weighting is not None:
        rows, shift = weighting @ rows, weighting @ shift
    width = concepts.shape[1]
    gram = rows.T @ rows
    if preserve is not None and preserve.numel():
        gram = gram + preserve_weight * (preserve.T @ preserve)
    gram = gram + ridge * torch.eye(width, dtype=gram.dtype, device=gram.device)
    gram = (gram + gram.T) / 2  # exact symmetry for the factorisation and for eigh
    factor, info = torch.linalg.cholesky_ex(gram)
    if int(info) != 0:
        raise InvalidInputError(
            f"the ScaPre system is singular: the concept and preserve tokens do not span all {width} input "
            "directions, and ridge is 0. Set ridge > 0 (e.g. 0.1)."
        )
    down = torch.cholesky_solve(rows.T, factor).T
    return ConceptSystem(
        rows=rows,
        shift=shift,
        gram=gram,
        down=down,
        concepts=concepts,
        anchors=anchors,
        weighting=weighting,
        factor=factor,
    )


def closed_form_delta(
    weight: torch.Tensor,
    concepts: torch.Tensor,
    anchors: torch.Tensor,
    preserve: torch.Tensor | None,
    preserve_weight: float,
    ridge: float,
    weighting: torch.Tensor | None = None,
    target_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """The dense edit D for one layer (for checks and small problems; compute_edit keeps it factored)."""
    system = build_system(concepts, anchors, preserve, preserve_weight, ridge, weighting)
    return system.up(weight, target_scale) @ system.down
