"""Unlearning on the digits model: forget some digits, keep the rest, measured by the judge.

Every method row runs on the same model in one process: the saliency trajectory is shared
by the FIA rows of one forget set (fast and exact each collect once; the union row reuses
the fast collection with agnostic protection off). Images are judged per digit:

    forget accuracy   = judge accuracy on the forgotten digits' prompts (lower is better)
    preserve accuracy = judge accuracy on the kept digits' prompts
    overall           = harmonic mean of preserve and (1 - forget)   (the paper's Table 2 form)

Each number is the mean over seeds (and its standard deviation); each seed draws `n`
images per digit.
"""

from __future__ import annotations

import copy
import logging
import statistics
from dataclasses import dataclass, field

import numpy as np
import torch

from fia_engine import find_target_layers
from fia_engine.diffusers_runner import CollectionSettings
from fia_engine.diffusers_runner import load_components as load_engine_components
from fia_engine.masks import FIAMask

from . import MODEL_DIR
from .data import CONTEXTS, DIGIT_WORDS
from .judge import load_judge
from .sampling import DEFAULT_CFG, DEFAULT_STEPS, generate, load_components

logger = logging.getLogger(__name__)

CONCEPT_TEMPLATE = "a handwritten {concept} {context}"
BASE_TEMPLATE = "a handwritten digit {context}"
EVAL_PROMPT = "a handwritten {word}"


@dataclass(frozen=True)
class FiaSettings:
    """FIA's hyper-parameters for this model: paper defaults, tuned once and then frozen."""

    pairs: int = 10
    steps: int = 50
    saliency_steps: int = 10
    r1: float = 0.05
    r2: float = 0.01
    alpha: float = 0.6
    cfg: float = DEFAULT_CFG

    def collection(self, mode: str, seed: int = 0) -> CollectionSettings:
        return CollectionSettings(
            kind="custom",
            concept_template=CONCEPT_TEMPLATE,
            base_template=BASE_TEMPLATE,
            contexts=list(CONTEXTS),
            pairs=self.pairs,
            steps=self.steps,
            saliency_steps=self.saliency_steps,
            cfg=self.cfg,
            seed=seed,
            mode=mode,
            r1=self.r1,
            timestep_spacing="trailing",
            batch_size=64,
        )


@dataclass
class Row:
    method: str
    forget: list[int]
    accuracy: np.ndarray  # (seeds, 10) judge accuracy per digit
    pruned_fraction: float
    seconds: float
    notes: dict = field(default_factory=dict)

    def _per_seed(self, digits: list[int]) -> list[float]:
        return [float(self.accuracy[s, digits].mean()) for s in range(len(self.accuracy))]

    @property
    def kept(self) -> list[int]:
        return [d for d in range(10) if d not in self.forget]

    def forget_acc(self) -> list[float]:
        return self._per_seed(self.forget) if self.forget else [0.0] * len(self.accuracy)

    def preserve_acc(self) -> list[float]:
        return self._per_seed(self.kept) if self.kept else [1.0] * len(self.accuracy)

    def overall(self) -> list[float]:
        return [harmonic(p, 1 - f) for p, f in zip(self.preserve_acc(), self.forget_acc(), strict=True)]


def harmonic(a: float, b: float) -> float:
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def masked_unet(unet: torch.nn.Module, mask: FIAMask, strength: float = 1.0) -> torch.nn.Module:
    """A copy of the UNet with the mask applied; the original stays as it is."""
    edited = copy.deepcopy(unet)
    for layer in find_target_layers(edited):
        layer.module.weight.data = mask.masked_weight(layer.canonical, layer.module.weight, strength)
    return edited


class DigitsBench:
    """The model, its judge and the engine's view of it, loaded once."""

    def __init__(
        self,
        model_dir=MODEL_DIR,
        images_per_digit: int = 50,
        seeds: tuple[int, ...] = (0, 1, 2),
        sample_steps: int = DEFAULT_STEPS,
    ):
        self.model_dir = model_dir
        self.sampling = load_components(model_dir)
        self.engine = load_engine_components(model_dir, "cpu")
        self.judge = load_judge()
        self.n, self.seeds, self.sample_steps = images_per_digit, seeds, sample_steps

    def accuracy(self, unet: torch.nn.Module | None = None) -> np.ndarray:
        """(seeds, 10): judge accuracy of n images per digit, per seed."""
        prompts = [EVAL_PROMPT.format(word=word) for word in DIGIT_WORDS]
        table = np.zeros((len(self.seeds), 10))
        for row, seed in enumerate(self.seeds):
            images = generate(self.sampling, prompts, self.n, seed, steps=self.sample_steps, unet_override=unet)
            predicted = self.judge.predict(images).reshape(10, self.n)
            table[row] = (predicted == np.arange(10)[:, None]).mean(axis=1)
        return table


def table(rows: list[Row]) -> str:
    lines = [
        "| method | forget | forget acc % | preserve acc % | overall | pruned/edited % | unlearn s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        f, fs = mean_std(row.forget_acc())
        p, ps = mean_std(row.preserve_acc())
        o, os_ = mean_std(row.overall())
        forget = ",".join(map(str, row.forget)) or "-"
        lines.append(
            f"| {row.method} | {forget} | {100 * f:.1f} ± {100 * fs:.1f} | {100 * p:.1f} ± {100 * ps:.1f} | "
            f"{o:.3f} ± {os_:.3f} | {100 * row.pruned_fraction:.3f} | {row.seconds:.1f} |"
        )
    return "\n".join(lines)


def relative_preserve(row: Row, original: Row) -> float:
    """Preserve accuracy as a fraction of the original model's accuracy on the same digits."""
    kept = row.kept
    return float(row.accuracy[:, kept].mean() / max(1e-9, original.accuracy[:, kept].mean()))
