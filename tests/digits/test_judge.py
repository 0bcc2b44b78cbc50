"""The judge reaches >= 97 % on real held-out digits drawn anywhere on the canvas."""

import numpy as np
import torch

from bench.digits.data import draw, load_split
from bench.digits.judge import features, heldout_accuracy, load_judge


def test_heldout_accuracy():
    assert heldout_accuracy(load_judge()) >= 0.97


def test_features_ignore_position():
    image = load_split()["test"][0][0]
    a = features(draw(image, 16, False, 1, 1)[None])
    b = features(draw(image, 16, False, 15, 14)[None])
    assert np.allclose(a, b, atol=1e-5)


def test_blank_canvas_has_zero_features():
    assert not features(-torch.ones(1, 1, 32, 32)).any()
