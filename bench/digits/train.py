"""Seeded CPU training of the digits model: UNet and text encoder jointly, epsilon MSE."""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextModel

from fia_engine.float_mode import flushing_subnormals

from . import MODEL_DIR
from .data import sample_batch
from .export import save_model
from .model import ModelSpec, build_scheduler, build_text_encoder, build_unet, count_parameters, get_spec, to_latent
from .tokenizer import build_tokenizer, encode, load_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    ema_decay: float = 0.998
    min_snr_gamma: float = 5.0
    seed: int = 0
    threads: int = 2
    log_every: int = 50
    snapshot_every: int = 0  # 0: no intermediate snapshots
    snapshot_dir: str = "bench/_work/digits_snapshot"
    init_from: str = ""  # a saved model folder to continue from (a second training phase)
    spec: str = "digits"  # model.SPECS: the digits model or the proxy model
    # Weight of a sparsity penalty on the FFN hidden activations (the inputs of ff.net.2).
    # Large trained transformers have sparse FFN activations by themselves; a model this small
    # does not, and sparse hidden units are the ones that can specialise to one concept.
    ffn_sparsity: float = 0.0
    # < 1: the cross-attention's value and output projections are frozen and the output is
    # scaled by this gain, so that the text reaches the image only as a weak signal that the
    # trainable layers after it (the FFN first) must amplify. 1: all trained, as in v4.
    cross_attention_gain: float = 1.0
    # True: the text encoder is not trained in this phase (the proxy spec always freezes it).
    # With a weak text write it keeps the encoder from growing its outputs to undo the gain.
    freeze_text_encoder: bool = False


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak rate."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _loss_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float) -> torch.Tensor:
    # Min-SNR weighting: stops nearly-clean timesteps from dominating, which speeds up
    # convergence noticeably on short runs.
    snr = alphas_cumprod[t] / (1.0 - alphas_cumprod[t])
    return torch.where(snr > gamma, gamma / snr, torch.ones_like(snr))


class _Ema:
    """Exponential moving average of parameters, with the usual short warm-up of the decay."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        self.params = params
        self.shadow = [p.detach().clone() for p in params]
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for s, p in zip(self.shadow, self.params, strict=True):
            s.lerp_(p.detach(), 1.0 - decay)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange live and averaged weights (call twice to restore)."""
        for s, p in zip(self.shadow, self.params, strict=True):
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)


class _FfnActivations:
    """How dense each token's FFN hidden vector is (the input of each ff.net.2).

    The measure is Hoyer's L1 / (L2 * sqrt(width)): 1 for a flat vector, 1/sqrt(width) for one
    active unit. Unlike a plain L1 it cannot be lowered by shrinking ff.net.0 and growing
    ff.net.2 by the same factor, which leaves the model's function as it was.
    """

    def __init__(self, unet: torch.nn.Module):
        self.values: list[torch.Tensor] = []
        self.handles = [
            module.register_forward_pre_hook(self._record)
            for name, module in unet.named_modules()
            if name.endswith("ff.net.2")
        ]

    def _record(self, module, inputs) -> None:
        hidden = inputs[0]
        density = hidden.abs().sum(-1) / (hidden.norm(dim=-1) * hidden.shape[-1] ** 0.5 + 1e-8)
        self.values.append(density.mean())

    def take(self) -> torch.Tensor:
        """The mean over the layers of this forward pass; the record is emptied."""
        mean = torch.stack(self.values).mean()
        self.values = []
        return mean


def _weaken_cross_attention(unet: torch.nn.Module, gain: float) -> None:
    """Freeze every attn2.to_v and attn2.to_out, the output scaled by ``gain``."""
    for name, module in unet.named_modules():
        if name.endswith("attn2"):
            with torch.no_grad():
                module.to_out[0].weight.mul_(gain)
                module.to_out[0].bias.mul_(gain)
            module.to_v.requires_grad_(False)
            module.to_out[0].requires_grad_(False)


def _load_phase(model_dir: Path, tokenizer) -> tuple:
    """Weights and training record of an earlier phase; its vocabulary must be ours."""
    saved = load_tokenizer(model_dir / "tokenizer")
    if saved.get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"{model_dir} was trained with another vocabulary")
    unet = UNet2DConditionModel.from_pretrained(str(model_dir / "unet"))
    text_encoder = CLIPTextModel.from_pretrained(str(model_dir / "text_encoder"))
    record = json.loads((model_dir / "training.json").read_text())
    logger.info("continuing from %s", model_dir)
    return unet, text_encoder, record


def _batches(spec: ModelSpec):
    """The spec's training data: (rng, batch size) -> (images, captions)."""
    if spec.concepts == "digits":
        return lambda rng, n: sample_batch(rng, n)[:2]
    from .proxy_data import sample_proxy_batch

    return lambda rng, n: sample_proxy_batch(rng, n, spec.digit_share)[:2]


def _vocabulary(spec: ModelSpec) -> list[str] | None:
    if spec.concepts == "digits":
        return None
    from .proxy_data import proxy_vocabulary

    return proxy_vocabulary()


def train(cfg: TrainConfig, out_dir: Path = MODEL_DIR) -> dict:
    torch.set_num_threads(cfg.threads)
    # Denormal floats make CPU kernels many times slower once small gradients appear. The flag
    # is process state: put it back, or everything run after training (tests) inherits it.
    was_flushing = flushing_subnormals()
    torch.set_flush_denormal(True)
    try:
        return _train(cfg, out_dir)
    finally:
        torch.set_flush_denormal(was_flushing)


def _train(cfg: TrainConfig, out_dir: Path) -> dict:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    spec = get_spec(cfg.spec)
    tokenizer = build_tokenizer(_vocabulary(spec))
    scheduler = build_scheduler()
    previous = None
    if cfg.init_from:
        unet, text_encoder, previous = _load_phase(Path(cfg.init_from), tokenizer)
    else:
        text_encoder = build_text_encoder(tokenizer, spec)
        unet = build_unet(spec)
    logger.info("parameters: unet %d, text encoder %d", count_parameters(unet), count_parameters(text_encoder))
    if cfg.cross_attention_gain < 1.0:
        _weaken_cross_attention(unet, cfg.cross_attention_gain)
    params = [p for p in unet.parameters() if p.requires_grad]
    frozen_text = spec.freeze_text_encoder or cfg.freeze_text_encoder
    if frozen_text:
        text_encoder.requires_grad_(False).eval()
    else:
        params += list(text_encoder.parameters())
    batches = _batches(spec)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, cfg))
    ema = _Ema(params, cfg.ema_decay)
    alphas_cumprod = scheduler.alphas_cumprod
    num_t = scheduler.config.num_train_timesteps

    activations = _FfnActivations(unet) if cfg.ffn_sparsity > 0 else None
    unet.train()
    text_encoder.train(not frozen_text)
    start = time.perf_counter()
    recent: list[float] = []
    recent_hidden: list[float] = [0.0]
    for step in range(cfg.steps):
        images, captions = batches(rng, cfg.batch_size)
        images = to_latent(images)
        ids = encode(tokenizer, captions)
        noise = torch.randn_like(images)
        t = torch.randint(0, num_t, (cfg.batch_size,))
        noisy = scheduler.add_noise(images, noise, t)
        with torch.set_grad_enabled(not frozen_text):
            context = text_encoder(ids)[0]
        pred = unet(noisy, t, context).sample
        per_image = (pred - noise).pow(2).mean(dim=(1, 2, 3))
        loss = (per_image * _loss_weights(alphas_cumprod, t, cfg.min_snr_gamma)).mean()
        if activations is not None:
            hidden = activations.take()
            loss = loss + cfg.ffn_sparsity * hidden
            recent_hidden.append(hidden.item())

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        lr_schedule.step()
        ema.update()

        recent.append(per_image.mean().item())
        recent = recent[-100:]
        recent_hidden = recent_hidden[-100:]
        if (step + 1) % cfg.log_every == 0:
            elapsed = time.perf_counter() - start
            logger.info(
                "step %d/%d  mse(last100) %.4f  ffn density %.4f  lr %.2e  %.2f s/step  elapsed %.0f s",
                step + 1,
                cfg.steps,
                sum(recent) / len(recent),
                sum(recent_hidden) / len(recent_hidden),
                lr_schedule.get_last_lr()[0],
                elapsed / (step + 1),
                elapsed,
            )
        if cfg.snapshot_every and (step + 1) % cfg.snapshot_every == 0 and step + 1 < cfg.steps:
            ema.swap()
            # One folder per snapshot, so that every one can be checked after the run.
            save_model(
                Path(cfg.snapshot_dir) / f"step-{step + 1}",
                unet,
                text_encoder,
                tokenizer,
                scheduler,
                {"config": asdict(cfg), "step": step + 1},
            )
            ema.swap()

    wall = time.perf_counter() - start
    ema.swap()  # ship the averaged weights
    metadata = {
        "config": asdict(cfg),
        "spec": spec.to_dict(),
        "final_mse_last100": round(sum(recent) / len(recent), 5),
        "wall_seconds": round(wall, 1),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "parameters": {"unet": count_parameters(unet), "text_encoder": count_parameters(text_encoder)},
        "previous_phase": previous,
    }
    save_model(out_dir, unet, text_encoder, tokenizer, scheduler, metadata)
    logger.info("training done in %.0f s, final mse %.4f", wall, metadata["final_mse_last100"])
    return metadata
