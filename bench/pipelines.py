"""A random-weight diffusers folder with Stable Diffusion 1.5's architecture, for timing the CLI.

    python -m bench.pipelines /tmp/sd15-random            # writes the folder (fp16 weights, about 2 GB)

UNet, text encoder (CLIP ViT-L/14's text tower: 12 layers, width 768) and VAE have SD 1.5's
shapes and random weights; the tokenizer is a small word-level one (CLIP's vocabulary is not
available offline), so prompts encode to SD's 77 x 768 shape. Timings do not depend on weight
values. ``--tiny`` writes a folder with the same layout and much smaller modules (for tests).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from bench.scapre_scale import SD15_UNET, TINY_UNET

logger = logging.getLogger("bench.pipelines")

SD15_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
SD15_VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=4,
    sample_size=512,
)
SD15_SCHEDULER = dict(
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    beta_end=0.012,
    num_train_timesteps=1000,
    steps_offset=1,
    clip_sample=False,
    set_alpha_to_one=False,
)
TINY_TEXT = dict(hidden_size=768, intermediate_size=64, num_hidden_layers=1, num_attention_heads=12)
TINY_VAE = dict(SD15_VAE, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=8, sample_size=64)


def write_random_sd15(
    folder: str | Path, tiny: bool = False, dtype: torch.dtype = torch.float16, seed: int = 0
) -> Path:
    """Write (or reuse, when complete) a random SD 1.5-architecture folder in save_pretrained layout."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from fia_engine.testing import tiny_tokenizer

    folder = Path(folder)
    marker = folder / "model_index.json"
    if marker.is_file():
        return folder
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(max_length=77)
    unet = dict(TINY_UNET, sample_size=8) if tiny else SD15_UNET  # tiny: 64 px by default
    UNet2DConditionModel(**unet).to(dtype).save_pretrained(folder / "unet")
    text = CLIPTextConfig(
        vocab_size=49408,
        max_position_embeddings=77,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        **(TINY_TEXT if tiny else SD15_TEXT),
    )
    CLIPTextModel(text).to(dtype).save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    AutoencoderKL(**(TINY_VAE if tiny else SD15_VAE)).to(dtype).save_pretrained(folder / "vae")
    DDIMScheduler(**SD15_SCHEDULER).save_pretrained(folder / "scheduler")
    marker.write_text(json.dumps({"_class_name": "StableDiffusionPipeline", "_note": "random weights"}))
    logger.info("wrote %s", folder)
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--tiny", action="store_true", help="the same layout with small modules")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    print(write_random_sd15(args.folder, tiny=args.tiny))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
