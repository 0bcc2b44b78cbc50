"""One layer's weight edit, kept as a low-rank product up @ down when that is smaller, else dense.

The closed form gives an exact rank-k product; the row mask and the blend scale its rows
(rank unchanged); only the Bures step's sign flips and the Sylvester path add rank. All
operations return new objects and never write into their inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LayerDelta:
    up: torch.Tensor | None = None  # (d_out, r)
    down: torch.Tensor | None = None  # (r, d_in)
    dense: torch.Tensor | None = None  # (d_out, d_in)

    @classmethod
    def low_rank(cls, up: torch.Tensor, down: torch.Tensor) -> LayerDelta:
        if up.dim() != 2 or down.dim() != 2 or up.shape[1] != down.shape[0]:
            raise ValueError(f"up {tuple(up.shape)} and down {tuple(down.shape)} do not multiply")
        return cls(up=up, down=down)

    @classmethod
    def full(cls, dense: torch.Tensor) -> LayerDelta:
        return cls(dense=dense)

    @property
    def is_low_rank(self) -> bool:
        return self.dense is None

    @property
    def shape(self) -> tuple[int, int]:
        if self.dense is not None:
            return tuple(self.dense.shape)
        return (self.up.shape[0], self.down.shape[1])

    @property
    def rank(self) -> int | None:
        """The stored rank of a low-rank delta; None for a dense one."""
        return None if self.dense is not None else int(self.up.shape[1])

    @property
    def stored_numel(self) -> int:
        if self.dense is not None:
            return self.dense.numel()
        return self.up.numel() + self.down.numel()

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.dense,) if self.dense is not None else (self.up, self.down)

    def to_dense(self) -> torch.Tensor:
        return self.dense.clone() if self.dense is not None else self.up @ self.down

    def to(self, *args, **kwargs) -> LayerDelta:
        if self.dense is not None:
            return LayerDelta.full(self.dense.to(*args, **kwargs))
        return LayerDelta.low_rank(self.up.to(*args, **kwargs), self.down.to(*args, **kwargs))

    # -- edits ----------------------------------------------------------------------------------
    def scale(self, factor: float) -> LayerDelta:
        if self.dense is not None:
            return LayerDelta.full(self.dense * factor)
        return LayerDelta.low_rank(self.up * factor, self.down)

    def scale_rows(self, factors: torch.Tensor) -> LayerDelta:
        """diag(factors) @ D."""
        column = factors.to(self.tensors()[0].dtype).unsqueeze(1)
        if self.dense is not None:
            return LayerDelta.full(self.dense * column)
        return LayerDelta.low_rank(self.up * column, self.down)

    def plus(self, other: LayerDelta) -> LayerDelta:
        """self + other: factors side by side when both are low rank, else dense."""
        if self.is_low_rank and other.is_low_rank:
            return LayerDelta.low_rank(torch.cat([self.up, other.up], 1), torch.cat([self.down, other.down], 0))
        return LayerDelta.full(self.to_dense() + other.to_dense())

    def row_dots(self, weight: torch.Tensor) -> torch.Tensor:
        """<D[i], W[i]> for every row i, without forming D."""
        if self.dense is not None:
            return (self.dense * weight).sum(1)
        return (self.up * (weight @ self.down.T)).sum(1)

    def row_norms(self) -> torch.Tensor:
        if self.dense is not None:
            return self.dense.norm(dim=1)
        gram = self.down @ self.down.T
        return ((self.up @ gram) * self.up).sum(1).clamp_min(0).sqrt()

    def add_rows(self, index: torch.Tensor, coefficient: float, rows: torch.Tensor) -> LayerDelta:
        """D[index] += coefficient * rows; low rank grows by len(index) (one column per row)."""
        if index.numel() == 0:
            return self
        if self.dense is not None:
            dense = self.dense.clone()
            dense[index] += coefficient * rows
            return LayerDelta.full(dense)
        extra = torch.zeros(self.up.shape[0], len(index), dtype=self.up.dtype, device=self.up.device)
        extra[index, torch.arange(len(index), device=self.up.device)] = coefficient
        return LayerDelta.low_rank(torch.cat([self.up, extra], 1), torch.cat([self.down, rows], 0))

    # -- storage -------------------------------------------------------------------------------
    def compact(self, tol: float) -> LayerDelta:
        """The numerical rank (singular values > tol * largest) and the smaller of the two storages."""
        rows, cols = self.shape
        if self.dense is not None:
            u, sigma, vh = torch.linalg.svd(self.dense, full_matrices=False)
        else:  # SVD of the small core of QR(up) R(down^T)^T: O((d_out + d_in) r^2), not O(d_out d_in r)
            q_up, r_up = torch.linalg.qr(self.up)
            q_down, r_down = torch.linalg.qr(self.down.T)
            core_u, sigma, core_vh = torch.linalg.svd(r_up @ r_down.T, full_matrices=False)
            u, vh = q_up @ core_u, core_vh @ q_down.T
        keep = int((sigma > tol * sigma.max()).sum()) if sigma.numel() and float(sigma.max()) > 0 else 0
        if keep * (rows + cols) < rows * cols:
            return LayerDelta.low_rank((u[:, :keep] * sigma[:keep]).contiguous(), vh[:keep].contiguous())
        return LayerDelta.full((u[:, :keep] * sigma[:keep]) @ vh[:keep] if self.dense is None else self.dense)
