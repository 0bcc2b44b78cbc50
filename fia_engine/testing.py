"""Small random models of Stable Diffusion's structure for tests and benchmarks (no downloads needed)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = (
    "a an the in of near on photo style golf ball church dog cat kitchen garden forest city street "
    "car tree house painting van gogh monet nude person woman man"
).split()


def tiny_unet(seed: int = 0, cross_attention_dim: int = 32, sample_size: int = 16, layers_per_block: int = 1):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        layers_per_block=layers_per_block,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()


def tiny_tokenizer(max_length: int = 12):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        model_max_length=max_length,
    )


def tiny_text_encoder(tokenizer, hidden: int = 32, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=tokenizer.model_max_length,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    return CLIPTextModel(config).eval()


def make_tiny_pipeline(folder: Path, seed: int = 0) -> Path:
    """A diffusers SD-layout folder (unet, text_encoder, tokenizer, scheduler) with random weights."""
    from diffusers import DDIMScheduler

    folder = Path(folder)
    tokenizer = tiny_tokenizer()
    tiny_unet(seed).save_pretrained(folder / "unet")
    tiny_text_encoder(tokenizer, seed=seed).save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(
        folder / "scheduler"
    )
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "TinyTestPipeline"}))
    return folder
