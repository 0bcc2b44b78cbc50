"""The gate of issue 12: can ANY small mask of FIA's layers make this model forget P1?

Before an FIA number on a model means anything, the model must hold its concepts where FIA
looks. The gate learns a mask of the FFN2 layers by gradient descent (``mask_oracle.py``),
keeping at most ``budget`` (5 %) of their weights pruned, and asks whether it forgets the
P1 digits (zero..four) to at most 10 % forget accuracy while keeping at least 90 % of the
original's preserve accuracy. A model that fails it cannot show FIA working, whatever FIA does.

Every model tried is kept as one row (JSON), and ``gate_table`` writes them side by side.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fia_engine import find_target_layers
from fia_engine.layers import weight_signature
from fia_engine.masks import FIAMask

from .benchmark import P1_FORGET
from .mask_oracle import OracleSettings, learn_mask, masked_linears, pruned_sets
from .unlearning import DigitsBench

logger = logging.getLogger(__name__)

GATE_HEADING = "## 15. The gate: models on which a learned FFN2 mask can forget (issue 12)"
MAX_FORGET = 0.10
MIN_PRESERVE_RATIO = 0.90
BUDGET = 0.05


@dataclass
class GateRow:
    model: str  # a short name for the table
    description: str  # what was tried
    objective: str
    budget: float
    steps: int
    pruned: float
    objective_left: float
    forget: float
    preserve: float
    original_forget: float
    original_preserve: float
    images: str  # "n images per digit x seeds"
    ffn2_weights: int

    @property
    def preserve_ratio(self) -> float:
        return self.preserve / max(1e-9, self.original_preserve)

    @property
    def passed(self) -> bool:
        return (
            self.pruned <= self.budget + 1e-9
            and self.forget <= MAX_FORGET
            and self.preserve_ratio >= MIN_PRESERVE_RATIO
        )

    def verdict(self) -> str:
        return (
            f"gate {'PASSED' if self.passed else 'FAILED'}: learned FFN2 mask {100 * self.pruned:.2f} % pruned "
            f"(<= {100 * self.budget:g}), forget {100 * self.forget:.1f} % (<= {100 * MAX_FORGET:g}), preserve "
            f"{100 * self.preserve_ratio:.1f} % of the original's (>= {100 * MIN_PRESERVE_RATIO:g})"
        )


def as_mask(
    unet: torch.nn.Module,
    pruned: dict[str, torch.Tensor],
    description: str,
    method: str = "learned FFN2 mask (bench/digits/gate.py)",
) -> FIAMask:
    """Pruned flat indices per layer as an ordinary FIA mask file (shareable, appliable)."""
    targets = find_target_layers(unet)
    return FIAMask(
        indices={name: idx.to(torch.int32) for name, idx in pruned.items()},
        shapes=dict(targets.shapes),
        family=targets.family,
        fingerprint=targets.fingerprint,
        weight_signature=weight_signature(targets),
        metadata={"method": method, "description": description},
    )


def run_gate(
    bench: DigitsBench, name: str, description: str, settings: OracleSettings, mask_out: Path | None = None
) -> GateRow:
    kept = [d for d in range(10) if d not in P1_FORGET]
    original = bench.accuracy().mean(axis=0)
    unet, fraction, left = learn_mask(bench, P1_FORGET, "ffn2", settings)
    if mask_out is not None:
        # the learned zeros, read back from a copy that still has the original's other weights
        learned = pruned_sets(unet)
        as_mask(bench.sampling.unet, learned, description).save(mask_out)
        logger.info("learned mask written to %s", mask_out)
    accuracy = bench.accuracy(unet).mean(axis=0)
    row = GateRow(
        model=name,
        description=description,
        objective=settings.objective,
        budget=settings.budget,
        steps=settings.steps,
        pruned=fraction,
        objective_left=left,
        forget=float(accuracy[P1_FORGET].mean()),
        preserve=float(accuracy[kept].mean()),
        original_forget=float(original[P1_FORGET].mean()),
        original_preserve=float(original[kept].mean()),
        images=f"{bench.n} x {len(bench.seeds)}",
        ffn2_weights=sum(m.weight.numel() for m in masked_linears(bench.sampling.unet, "ffn2").values()),
    )
    logger.info(row.verdict())
    return row


def save_rows(path: Path, rows: list[GateRow]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")


def load_rows(path: Path) -> list[GateRow]:
    return [GateRow(**entry) for entry in json.loads(path.read_text())]


def gate_table(rows: list[GateRow], command: str) -> str:
    lines = [
        GATE_HEADING,
        "",
        f"Command(s): `{command}`",
        "",
        "A mask of the FFN2 layers (FIA's) is learned by gradient descent with the kept digits in view "
        "(bench/digits/mask_oracle.py, 'objective' says what the forgotten prompts are distilled onto), at most "
        f"'budget' of the weights pruned. The gate: forget accuracy <= {100 * MAX_FORGET:g} % on zero..four and "
        f"preserve >= {100 * MIN_PRESERVE_RATIO:g} % of the original's on five..nine.",
        "",
        "| model | what was tried | FFN2 weights | objective | budget % | pruned % | objective left | original "
        "forget / preserve | forget | preserve (rel.) | images | gate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.description} | {r.ffn2_weights:,} | {r.objective} | {100 * r.budget:g} | "
            f"{100 * r.pruned:.2f} | {r.objective_left:.2f} | {r.original_forget:.3f} / {r.original_preserve:.3f} | "
            f"{r.forget:.3f} | {r.preserve:.3f} ({r.preserve_ratio:.2f}) | {r.images} | "
            f"{'passed' if r.passed else 'FAILED'} |"
        )
    return "\n".join(lines) + "\n"
