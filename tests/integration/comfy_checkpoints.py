"""Randomly initialised Stable Diffusion checkpoints in ComfyUI's single-file format.

The networks are ComfyUI's own classes built from the same configs ComfyUI
detects (``comfy/supported_models.py``, ``comfy/model_detection.py``); the file
is written with ``BaseModel.state_dict_for_saving``, the function behind
ComfyUI's own checkpoint saver, so the keys are exactly what
``comfy.sd.load_checkpoint_guess_config`` expects (``model.diffusion_model.*``,
``cond_stage_model.*`` / ``conditioner.embedders.*``, ``first_stage_model.*``).

Weights are random (torch's default layer initialisation, seeded): images are
noise, but shapes, memory and timings are those of the real models.
ComfyUI must already be booted (``comfy_host.boot``) before these are called.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

log = logging.getLogger("fia.tests.comfy_checkpoints")

# The full UNet configs ComfyUI matches against (comfy/model_detection.py,
# unet_config_from_diffusers_unet), plus the SD 2.x one.
_COMMON = {
    "use_checkpoint": False,
    "image_size": 32,
    "out_channels": 4,
    "use_spatial_transformer": True,
    "legacy": False,
    "in_channels": 4,
    "model_channels": 320,
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
}
UNET_CONFIGS = {
    "sd15": {
        **_COMMON,
        "adm_in_channels": None,
        "num_res_blocks": [2, 2, 2, 2],
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "channel_mult": [1, 2, 4, 4],
        "transformer_depth_middle": 1,
        "use_linear_in_transformer": False,
        "context_dim": 768,
        "num_heads": 8,
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    },
    "sd2": {
        **_COMMON,
        "adm_in_channels": None,
        "num_res_blocks": [2, 2, 2, 2],
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "channel_mult": [1, 2, 4, 4],
        "transformer_depth_middle": 1,
        "use_linear_in_transformer": True,
        "context_dim": 1024,
        "num_head_channels": 64,
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    },
    "sdxl": {
        **_COMMON,
        "num_classes": "sequential",
        "adm_in_channels": 2816,
        "num_res_blocks": [2, 2, 2],
        "transformer_depth": [0, 0, 2, 2, 10, 10],
        "channel_mult": [1, 2, 4],
        "transformer_depth_middle": 10,
        "use_linear_in_transformer": True,
        "context_dim": 2048,
        "num_head_channels": 64,
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
    },
}
# What ComfyUI's detection must report for each file (the model_config class name).
KINDS = {
    "sd15": ("sd15", "SD15"),
    "sd2-eps": ("sd2", "SD20"),
    "sd2-v": ("sd2", "SD20"),
    "sdxl": ("sdxl", "SDXL"),
}
# The SD 1.x/2.x/XL VAE (comfy/sd.py, VAE.__init__, "default SD1.x/SD2.x VAE parameters").
VAE_DDCONFIG = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [],
    "dropout": 0.0,
}
# comfy/supported_models.py, SD20.model_type: v-prediction is detected from the spread
# of this bias (std > 0.09).
_SD2_VPRED_PROBE = "output_blocks.11.1.transformer_blocks.0.norm1.bias"


def randomize_(module: torch.nn.Module) -> torch.nn.Module:
    """Give every parameter a value: torch's own init per layer, N(0, 0.02) for the rest.

    ComfyUI builds its layers with ``comfy.ops.disable_weight_init``, whose
    ``reset_parameters`` does nothing, so fresh ComfyUI modules hold whatever
    memory was there. This calls the ``reset_parameters`` of the torch.nn class
    each layer derives from.
    """
    done = set()
    for sub in module.modules():
        for cls in type(sub).__mro__:
            if cls.__module__.startswith("torch.nn.modules") and "reset_parameters" in vars(cls):
                cls.reset_parameters(sub)
                done.update(id(p) for p in sub.parameters(recurse=False))
                break
    with torch.no_grad():
        for param in module.parameters():
            if id(param) not in done:
                param.normal_(0.0, 0.02)
    return module


def build_state_dict(kind: str, seed: int = 0, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The full single-file state dict of a random ``kind`` checkpoint (see KINDS)."""
    import comfy.model_detection
    from comfy.ldm.models.autoencoder import AutoencoderKL

    config_name, expected = KINDS[kind]
    unet_config = dict(UNET_CONFIGS[config_name])
    # Build in float32 for SD 1.5/2.x; SDXL (2.6 G UNet parameters) is built in the target
    # dtype to stay within a 24 GB machine.
    build_dtype = dtype if config_name == "sdxl" else torch.float32
    unet_config["dtype"] = build_dtype
    model_config = comfy.model_detection.model_config_from_unet_config(unet_config)
    if model_config is None or type(model_config).__name__ != expected:
        raise RuntimeError(f"ComfyUI matched {type(model_config).__name__} for the {kind} config, not {expected}")
    torch.manual_seed(seed)
    model = model_config.get_model({}, device="cpu")
    randomize_(model.diffusion_model)
    if kind == "sd2-v":
        with torch.no_grad():
            model.diffusion_model.get_parameter(_SD2_VPRED_PROBE).normal_(0.0, 0.2)
    clip = randomize_(model_config.clip_target().clip(device="cpu", dtype=build_dtype))
    vae = randomize_(AutoencoderKL(ddconfig=VAE_DDCONFIG, embed_dim=4).to(build_dtype))
    sd = model.state_dict_for_saving(clip.state_dict(), vae.state_dict(), None)
    out = {}
    for key, tensor in sd.items():
        tensor = tensor.detach()
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)
        out[key] = tensor.contiguous()
    return out


def detect(state_dict: dict[str, torch.Tensor]) -> str:
    """The class name of the model config ComfyUI detects for a single-file state dict."""
    import comfy.model_detection

    prefix = comfy.model_detection.unet_prefix_from_state_dict(state_dict)
    config = comfy.model_detection.model_config_from_unet(state_dict, prefix)
    return "None" if config is None else type(config).__name__


def random_checkpoint(kind: str, directory: Path, seed: int = 0) -> Path:
    """Path of ``<directory>/<kind>-random-s<seed>.safetensors``, made the first time (fp16).

    The file is written to a temporary name and renamed, so an interrupted run
    leaves no half file behind.
    """
    import comfy.utils

    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; one of {sorted(KINDS)}")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{kind}-random-s{seed}.safetensors"
    if path.exists():
        return path
    start = time.perf_counter()
    sd = build_state_dict(kind, seed)
    found = detect(sd)
    if found != KINDS[kind][1]:
        raise RuntimeError(f"ComfyUI detects the random {kind} checkpoint as {found}, not {KINDS[kind][1]}")
    partial = path.with_suffix(".partial")
    comfy.utils.save_torch_file(sd, str(partial), metadata={"fia_test_checkpoint": kind, "seed": str(seed)})
    partial.rename(path)
    log.info("made %s (%.1f GB) in %.1f s", path, path.stat().st_size / 1e9, time.perf_counter() - start)
    return path
