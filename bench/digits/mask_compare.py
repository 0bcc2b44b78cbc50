"""Two masks of the same model side by side, layer by layer: sizes, overlap, IoU.

Used to ask where FIA's selection and the learned FFN2 mask (gate.py) agree and where FIA
spends its budget elsewhere (issue 12, item 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fia_engine.masks import FIAMask


@dataclass
class LayerComparison:
    layer: str
    weights: int
    a: int  # pruned by the first mask
    b: int
    shared: int

    @property
    def iou(self) -> float:
        union = self.a + self.b - self.shared
        return self.shared / union if union else 1.0

    @property
    def chance_shared(self) -> float:
        """Expected overlap of two random masks of these sizes."""
        return self.a * self.b / max(1, self.weights)


def compare(a: FIAMask, b: FIAMask) -> list[LayerComparison]:
    if a.fingerprint != b.fingerprint:
        raise ValueError("the masks were made for different architectures")
    rows = []
    for name, (out, inp) in a.shapes.items():
        ia, ib = a.indices.get(name, torch.empty(0)), b.indices.get(name, torch.empty(0))
        shared = int(torch.isin(ia, ib).sum()) if ia.numel() and ib.numel() else 0
        rows.append(LayerComparison(name, out * inp, int(ia.numel()), int(ib.numel()), shared))
    return rows


def comparison_table(rows: list[LayerComparison], name_a: str, name_b: str) -> str:
    lines = [
        f"| layer | {name_a} % | {name_b} % | shared | by chance | IoU | share of {name_a} in {name_b} % |",
        "|---|---|---|---|---|---|---|",
    ]
    total = LayerComparison("all", 0, 0, 0, 0)
    for r in rows:
        lines.append(
            f"| {r.layer} | {100 * r.a / r.weights:.2f} | {100 * r.b / r.weights:.2f} | {r.shared:,} | "
            f"{r.chance_shared:,.0f} | {r.iou:.3f} | {100 * r.shared / max(1, r.a):.1f} |"
        )
        total = LayerComparison("all", total.weights + r.weights, total.a + r.a, total.b + r.b, total.shared + r.shared)
    lines.append(
        f"| **all** | {100 * total.a / total.weights:.2f} | {100 * total.b / total.weights:.2f} | {total.shared:,} | "
        f"{sum(r.chance_shared for r in rows):,.0f} | {total.iou:.3f} | {100 * total.shared / max(1, total.a):.1f} |"
    )
    return "\n".join(lines)
