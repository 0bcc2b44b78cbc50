"""Does the model draw the digit it is asked for? Sample per digit, judge, count."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .data import CONTEXTS, DIGIT_WORDS
from .judge import load_judge
from .sampling import DEFAULT_CFG, DEFAULT_STEPS, load_components, sample_pairs

logger = logging.getLogger(__name__)

# Plain wordings, plus the benchmark's concept template with a context phrase.
WORDINGS = ("a handwritten {word}", "the digit {word}", "a handwritten {word} {context}")


@dataclass
class CheckResult:
    per_digit: list[float]  # accuracy per digit, all wordings and seeds pooled
    per_wording: dict[str, float]
    per_seed: dict[int, float]  # mean over digits, per seed
    images_per_digit: int  # per seed

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_digit))


def plan(n: int) -> tuple[list[str], list[int], list[int], list[int]]:
    """Prompts, noise ids, digit and wording index of every image of the check.

    n images per digit and wording; the context wording cycles through CONTEXTS.
    """
    prompts, noise_ids, digits, wordings = [], [], [], []
    for d, word in enumerate(DIGIT_WORDS):
        for w, wording in enumerate(WORDINGS):
            for j in range(n):
                prompts.append(wording.format(word=word, context=CONTEXTS[j % len(CONTEXTS)]))
                noise_ids.append(j)
                digits.append(d)
                wordings.append(w)
    return prompts, noise_ids, digits, wordings


def check_model(
    model_dir, n: int = 20, seeds: tuple[int, ...] = (0,), steps: int = DEFAULT_STEPS, cfg: float = DEFAULT_CFG
) -> CheckResult:
    components = load_components(model_dir)
    judge = load_judge()
    prompts, noise_ids, digits, wordings = plan(n)
    digits, wordings = np.asarray(digits), np.asarray(wordings)
    correct = {}
    for seed in seeds:
        images = sample_pairs(components, prompts, noise_ids, seed, steps=steps, cfg=cfg)
        correct[seed] = judge.predict(images) == digits
    pooled = np.concatenate(list(correct.values()))
    all_digits, all_wordings = np.tile(digits, len(seeds)), np.tile(wordings, len(seeds))
    return CheckResult(
        per_digit=[float(pooled[all_digits == d].mean()) for d in range(len(DIGIT_WORDS))],
        per_wording={wording: float(pooled[all_wordings == w].mean()) for w, wording in enumerate(WORDINGS)},
        per_seed={
            seed: float(np.mean([hits[digits == d].mean() for d in range(len(DIGIT_WORDS))]))
            for seed, hits in correct.items()
        },
        images_per_digit=n * len(WORDINGS),
    )
