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


# -- ldm single-file checkpoints -------------------------------------------------------------------

_LDM_TOP = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_LDM_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def ldm_unet_key(key: str, layers_per_block: int, up_has_attention: list[bool]) -> str:
    """The ldm (single-file) name of a diffusers UNet2DConditionModel state-dict key.

    Down level l holds input blocks 1 + l(n+1) .. l(n+1) + n, its downsampler last; up level l
    holds output blocks l(n+1) .. l(n+1) + n, the last carrying the upsampler after its
    transformer (slot 2) or directly after its resnet (slot 1).
    """
    for old, new in _LDM_TOP.items():
        if key.startswith(old + "."):
            return new + key[len(old) :]
    parts = key.split(".")
    n = layers_per_block
    if parts[0] == "mid_block":
        kind, index, rest = parts[1], int(parts[2]), parts[3:]
        slot, inner = _ldm_rest(kind, rest).split(".", 1)  # the middle block has no slots: its parts are 0, 1, 2
        return f"middle_block.{2 * index if slot == '0' else 1}.{inner}"
    level, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
    if parts[0] == "down_blocks":
        if kind == "downsamplers":
            return f"input_blocks.{1 + level * (n + 1) + n}.0.op.{rest[-1]}"
        return f"input_blocks.{1 + level * (n + 1) + index}.{_ldm_rest(kind, rest)}"
    if kind == "upsamplers":
        return f"output_blocks.{level * (n + 1) + n}.{2 if up_has_attention[level] else 1}.conv.{rest[-1]}"
    return f"output_blocks.{level * (n + 1) + index}.{_ldm_rest(kind, rest)}"


def _ldm_rest(kind: str, rest: list[str]) -> str:
    if kind == "resnets":
        return f"0.{_LDM_RESNET[rest[0]]}.{'.'.join(rest[1:])}"
    return "1." + ".".join(rest)  # attentions keep diffusers' inner names (proj_in, transformer_blocks, ...)


def ldm_unet_state_dict(unet) -> dict[str, torch.Tensor]:
    """A diffusers UNet's weights under ldm single-file names (``model.diffusion_model.*``)."""
    config = unet.config
    up_attention = ["CrossAttn" in kind for kind in config.up_block_types]
    return {
        "model.diffusion_model." + ldm_unet_key(key, config.layers_per_block, up_attention): tensor.detach().clone()
        for key, tensor in unet.state_dict().items()
    }


def tiny_ldm_checkpoint(path: Path, unet, dtype: torch.dtype = torch.float16, seed: int = 0) -> Path:
    """A single-file checkpoint of ``unet`` with small random text-encoder and VAE stand-ins and metadata."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors = {key: value.to(dtype).contiguous() for key, value in ldm_unet_state_dict(unet).items()}
    tensors["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] = torch.randn(
        40, 32, generator=generator
    ).to(dtype)
    tensors["first_stage_model.decoder.conv_in.weight"] = torch.randn(8, 4, 3, 3, generator=generator).to(dtype)
    tensors["first_stage_model.logvar_steps"] = torch.arange(5, dtype=torch.int64)
    path = Path(path)
    save_file(tensors, str(path), metadata={"modelspec.title": "tiny random", "note": "made by fia_engine.testing"})
    return path


def lora_loader(unet, text_encoder=None):
    """What diffusers' ``load_lora_weights`` needs of a pipeline, around a bare UNet (and text encoder).

    The digits model and the tiny pipelines have no VAE, so no StableDiffusionPipeline can be
    built from them; this object carries diffusers' own StableDiffusionLoraLoaderMixin, so
    ``lora_loader(unet).load_lora_weights(path)`` runs the code path a pipeline runs
    (key conversion, PEFT config, ``unet.load_lora_adapter``). Needs peft, as diffusers does.
    """
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    class _UNetLoraLoader(StableDiffusionLoraLoaderMixin):
        hf_device_map = None  # no accelerate device map: nothing to offload

        def __init__(self):
            self.unet, self.text_encoder = unet, text_encoder

        @property
        def components(self) -> dict:
            return {"unet": self.unet, "text_encoder": self.text_encoder}

    return _UNetLoraLoader()
