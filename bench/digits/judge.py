"""The judge: which digit does a 32x32 canvas show, wherever and however it is drawn.

Every canvas goes through the same normalisation: find the ink, cut a square around it,
resize it to 16x16 and scale its brightness to a peak of 1. An RBF SVM is fitted on the
TRAIN digits rendered through the very same path (random sizes, strokes, positions), so
train and test images see identical preprocessing and test digits are never seen in fitting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.svm import SVC

from .data import draw, load_split, random_render

logger = logging.getLogger(__name__)

FEATURE_SIDE = 16
INK_THRESHOLD = 0.3  # in [0, 1] brightness; below it a pixel counts as background
RENDERS_PER_DIGIT = 4
FIT_SEED = 1234
EVAL_SEED = 4321


def features(images: torch.Tensor) -> np.ndarray:
    """(N, 1, 32, 32) canvases in [-1, 1] -> (N, 16*16) position/size-free features."""
    x = ((images.detach().float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0)[:, 0]
    side = x.shape[-1]
    # A frame of background lets the square crop reach past the canvas edge.
    padded = F.pad(x, (side, side, side, side))
    out = torch.zeros(len(x), FEATURE_SIDE, FEATURE_SIDE)
    for i, img in enumerate(x):
        rows, cols = torch.nonzero(img > INK_THRESHOLD, as_tuple=True)
        if len(rows) == 0:
            continue
        r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
        extent = int(max(r1 - r0, c1 - c0)) + 1
        top = int(r0 + r1 + 1 - extent) // 2 + side
        left = int(c0 + c1 + 1 - extent) // 2 + side
        crop = padded[i, top : top + extent, left : left + extent][None, None]
        small = F.interpolate(
            crop, size=(FEATURE_SIDE, FEATURE_SIDE), mode="bilinear", align_corners=False, antialias=True
        )[0, 0]
        out[i] = small / small.max().clamp_min(1e-6)
    return out.reshape(len(x), -1).numpy()


def render_split(split: str, renders_per_digit: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Every digit of ``split`` drawn ``renders_per_digit`` times with random attributes."""
    images01, labels = load_split()[split]
    rng = np.random.default_rng(seed)
    canvases, targets = [], []
    for _ in range(renders_per_digit):
        for image, label in zip(images01, labels, strict=True):
            r = random_render(int(label), rng)
            canvases.append(draw(image, r.side, r.bold, r.row, r.col))
            targets.append(int(label))
    return torch.stack(canvases), np.asarray(targets)


@dataclass
class Judge:
    classifier: SVC

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """Predicted digit (0..9) for each canvas."""
        return self.classifier.predict(features(images))


def fit_judge() -> Judge:
    images, labels = render_split("train", RENDERS_PER_DIGIT, FIT_SEED)
    classifier = SVC(C=10.0, gamma="scale")
    classifier.fit(features(images), labels)
    logger.info("judge fitted on %d rendered train digits", len(labels))
    return Judge(classifier)


@lru_cache(maxsize=1)
def load_judge() -> Judge:
    """The fitted judge. Fitting is deterministic and takes seconds, so it is never stored:
    no pickle file to trust, nothing to go stale when the code changes."""
    return fit_judge()


def heldout_accuracy(judge: Judge, renders_per_digit: int = 3) -> float:
    """Accuracy on real TEST digits drawn with random positions, sizes and strokes."""
    images, labels = render_split("test", renders_per_digit, EVAL_SEED)
    return float((judge.predict(images) == labels).mean())
