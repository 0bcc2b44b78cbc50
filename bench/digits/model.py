"""Architecture of the digits model: a tiny CLIP text encoder and a UNet on a 2x2-packed canvas.

The UNet is diffusers' ``UNet2DConditionModel`` with two cross-attention transformer blocks
per stage at 8x8 and 4x4 and the default GEGLU feed-forward, so
``...transformer_blocks.N.ff.net.2`` is a Linear(4*d -> d): the layers the unlearning engine
edits, as in Stable Diffusion.

Its "latent" is the 32x32 canvas with every 2x2 pixel block packed into 4 channels
(pixel unshuffle): a lossless, parameter-free stand-in for Stable Diffusion's VAE that makes
every UNet call four times cheaper, which is what lets the benchmark run on two CPU cores.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from .data import CANVAS

logger = logging.getLogger(__name__)

TEXT_HIDDEN = 64
PACK = 2  # canvas pixels per latent side
LATENT_CHANNELS = PACK * PACK
LATENT_SIZE = CANVAS // PACK


def to_latent(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, 32, 32) canvases -> (N, 4, 16, 16) latents (exact, invertible)."""
    return F.pixel_unshuffle(images, PACK)


def to_image(latents: torch.Tensor) -> torch.Tensor:
    """(N, 4, 16, 16) latents -> (N, 1, 32, 32) canvases."""
    return F.pixel_shuffle(latents, PACK)


@dataclass(frozen=True)
class ModelSpec:
    """What differs between the bundled models: the digits model (v4) and the proxy model."""

    name: str
    block_out_channels: tuple[int, ...] = (32, 64, 96)
    transformer_layers: int = 2
    concepts: str = "digits"  # "digits" or "digits+glyphs" (proxy_data.py)
    digit_share: float = 1.0  # share of training images that are digits
    freeze_text_encoder: bool = False  # True: a random text encoder the UNet must learn to read, as SD's CLIP is frozen
    word_scale: float = 0.02  # std of the word embeddings at initialisation (CLIP's default: 0.02)

    def to_dict(self) -> dict:
        return asdict(self)


SPECS = {
    "digits": ModelSpec("digits"),
    # Many concepts, a frozen text encoder and wider FFNs: what Stable Diffusion's FFNs have
    # and the digits model lacks (bench/digits/README.md, "The proxy model").
    "proxy": ModelSpec(
        "proxy",
        block_out_channels=(32, 96, 128),
        concepts="digits+glyphs",
        digit_share=0.5,
        freeze_text_encoder=True,
        # A frozen encoder at CLIP's init scale hands every word nearly the same vector (cosine
        # 0.87 between "zero" and "one"), and the UNet learnt nothing from text in 1000 steps;
        # unit-scale word vectors keep words apart while telling the UNet nothing about them.
        word_scale=1.0,
    ),
}


def get_spec(name: str) -> ModelSpec:
    if name not in SPECS:
        raise ValueError(f"unknown model spec {name!r}; choose from {sorted(SPECS)}")
    return SPECS[name]


def build_text_encoder(tokenizer: PreTrainedTokenizerFast, spec: ModelSpec = SPECS["digits"]) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=4 * TEXT_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        projection_dim=TEXT_HIDDEN,
    )
    encoder = CLIPTextModel(config)
    if spec.word_scale != config.initializer_range:
        with torch.no_grad():
            encoder.get_input_embeddings().weight.normal_(0.0, spec.word_scale)
    return encoder


def build_unet(spec: ModelSpec = SPECS["digits"]) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=spec.block_out_channels,
        layers_per_block=1,
        # Two transformer blocks per stage: SD-like depth of the feed-forward path, which is
        # where FIA looks for concepts (one block per stage left digit identity mostly
        # outside the FFNs; see bench/RESULTS.md).
        transformer_layers_per_block=spec.transformer_layers,
        norm_num_groups=16,
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=4,  # diffusers reads this as the number of heads
    )


def build_scheduler() -> DDPMScheduler:
    # The cosine schedule keeps some signal at high t in a 32x32 pixel space, where the
    # linear SD schedule would destroy the image too early.
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="epsilon",
        clip_sample=True,
    )


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())
