"""Architecture of the digits model: a tiny CLIP text encoder and a pixel-space UNet.

The UNet is diffusers' ``UNet2DConditionModel`` with cross-attention transformer blocks at
16x16 and 8x8 and the default GEGLU feed-forward, so ``...transformer_blocks.0.ff.net.2`` is
a Linear(4*d -> d): the layers the unlearning engine edits, as in Stable Diffusion.
"""

from __future__ import annotations

import logging

from diffusers import DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from .data import CANVAS

logger = logging.getLogger(__name__)

TEXT_HIDDEN = 64


def build_text_encoder(tokenizer: PreTrainedTokenizerFast) -> CLIPTextModel:
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
    return CLIPTextModel(config)


def build_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=CANVAS,
        in_channels=1,
        out_channels=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
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
