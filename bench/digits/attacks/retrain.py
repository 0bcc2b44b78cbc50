"""Refill by training: the candidate FFN2 entries are fine-tuned on real images of the erased digits.

The attacker has images of the digits (not the original model) and a step budget. Only the
candidate entries move (their gradient is kept, every other weight's is zero, so Adam leaves
those exactly as they were): with a plain bake the candidates are its exact zeros, i.e. the
mask; an attacker facing a decoy bake, who cannot find the entries, can only train all FFN2
weights with the same budget. Comparing the two says what the map is worth to an attacker
with data. The loss is the model's own training loss (true noise, 'a handwritten <digit>').
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fia_engine import find_target_layers

from ..data import DIGIT_WORDS
from ..tokenizer import encode
from ..unlearning import DigitsBench
from .embedding import _images, frozen

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainSettings:
    steps: int = 100
    batch: int = 16
    lr: float = 1e-3
    seed: int = 0


def retrain(
    bench: DigitsBench, unet: torch.nn.Module, missing: dict[str, torch.Tensor] | None, forget: list[int],
    settings: RetrainSettings,
) -> torch.nn.Module:  # fmt: skip
    """A copy of ``unet`` whose ``missing`` entries (bool per canonical FFN2 layer; None: all) were trained."""
    _, text_encoder, tokenizer, scheduler = bench.sampling
    attacked = copy.deepcopy(unet).requires_grad_(False)
    weights, handles = [], []
    for layer in find_target_layers(attacked):
        weight = layer.module.weight
        weight.requires_grad_(True)
        weights.append(weight)
        if missing is not None:
            keep_grad = missing[layer.canonical].to(weight.dtype)
            handles.append(weight.register_hook(lambda grad, keep=keep_grad: grad * keep))
    optimiser = torch.optim.Adam(weights, lr=settings.lr)
    rng = np.random.default_rng(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    with torch.no_grad():
        prompts = text_encoder(encode(tokenizer, [f"a handwritten {DIGIT_WORDS[d]}" for d in forget]))[0]
    try:
        with frozen(text_encoder):
            for _ in range(settings.steps):
                digits = rng.choice(forget, size=settings.batch)
                clean = torch.cat([_images(int(d), 1, rng) for d in digits])
                noise = torch.randn(clean.shape, generator=generator)
                t = torch.randint(0, scheduler.config.num_train_timesteps, (settings.batch,), generator=generator)
                context = prompts[[forget.index(int(d)) for d in digits]]
                loss = F.mse_loss(attacked(scheduler.add_noise(clean, noise, t), t, context).sample, noise)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
    finally:
        for handle in handles:
            handle.remove()
    attacked.requires_grad_(False)
    return attacked
