"""The UNet layers FIA and ScaPre edit, found by key name in an ldm single-file checkpoint.

The single-file format users download (SD 1.x / 2.x / XL ``.safetensors``) keeps the UNet
under ``model.diffusion_model.`` with ldm's names: ``input_blocks.N`` (conv_in first, then
per level its resnet(+transformer) blocks and one downsampler, none after the last level),
``middle_block`` and ``output_blocks.N`` (per level its blocks, the last carrying the
upsampler). The canonical names of fia_engine.layers (``down.<level>.<index>.<block>``,
``.to_k`` / ``.to_v`` for ScaPre) follow from that layout, read here from the keys alone:
no model is built and no config is needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UnsupportedArchitectureError
from .layers import family_of, ldm_block_layout
from .safetensors_stream import SafetensorsHeader

UNET_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
FFN2 = "ffn2"
CROSS_ATTENTION = "cross_attention"
_BLOCK = r"(input_blocks\.\d+|middle_block|output_blocks\.\d+)"
_LAYER_KEY = re.compile(rf"^{_BLOCK}\.1\.transformer_blocks\.(\d+)\.(ff\.net\.2|attn2\.to_k|attn2\.to_v)\.weight$")
_SUFFIX = {"ff.net.2": "", "attn2.to_k": ".to_k", "attn2.to_v": ".to_v"}
_KIND = {"ff.net.2": FFN2, "attn2.to_k": CROSS_ATTENTION, "attn2.to_v": CROSS_ATTENTION}


@dataclass(frozen=True)
class CheckpointLayers:
    """The editable layers of one checkpoint: canonical name -> (key in the file, shape)."""

    keys: dict[str, str]
    shapes: dict[str, tuple[int, int]]
    family: str


def unet_prefix(header: SafetensorsHeader) -> str:
    for prefix in UNET_PREFIXES:
        if f"{prefix}input_blocks.0.0.weight" in header.entries:
            return prefix
    raise UnsupportedArchitectureError(
        f"{header.path} holds no Stable Diffusion UNet in the ldm single-file layout (no key "
        f"'model.diffusion_model.input_blocks.0.0.weight'); diffusers folders take 'apply' instead"
    )


def block_layout(unet_keys: list[str]) -> dict[str, tuple[str, int, int]]:
    """ldm block prefix (``input_blocks.4``) -> (stage, level, index within the level), from the keys.

    A down block without a resnet (``.0.in_layers``) is the level's downsampler; an up block
    with a ``conv`` after its resnet holds the upsampler that ends its level.
    """
    inputs, outputs, resnets, upsamplers = set(), set(), set(), set()
    for key in unet_keys:
        parts = key.split(".")
        if parts[0] == "input_blocks":
            inputs.add(int(parts[1]))
            if parts[2:4] == ["0", "in_layers"]:
                resnets.add(int(parts[1]))
        elif parts[0] == "output_blocks":
            outputs.add(int(parts[1]))
            if len(parts) == 5 and parts[2] != "0" and parts[3] == "conv":
                upsamplers.add(int(parts[1]))
    return ldm_block_layout(sorted(inputs), inputs - resnets - {0}, sorted(outputs), upsamplers)


def find_checkpoint_layers(header: SafetensorsHeader, kind: str) -> CheckpointLayers:
    """The FFN2 (``kind=FFN2``) or cross-attention to_k / to_v (``CROSS_ATTENTION``) weights of the UNet."""
    prefix = unet_prefix(header)
    unet = [name[len(prefix) :] for name in header.entries if name.startswith(prefix)]
    layout = block_layout(unet)
    keys, shapes, context = {}, {}, 0
    for name in unet:
        match = _LAYER_KEY.match(name)
        if not match or match[1] not in layout:
            continue
        block, transformer, layer = match.groups()
        entry = header.entries[prefix + name]
        if layer == "attn2.to_k":
            context = entry.shape[-1]
        if _KIND[layer] != kind:
            continue
        if len(entry.shape) != 2:
            raise UnsupportedArchitectureError(f"{header.path}: {prefix}{name} has shape {entry.shape}, not a linear")
        stage, level, index = layout[block]
        canonical = f"{stage}.{level}.{index}.{transformer}{_SUFFIX[layer]}"
        keys[canonical], shapes[canonical] = prefix + name, (entry.shape[0], entry.shape[1])
    if not keys:
        raise UnsupportedArchitectureError(
            f"{header.path}: the UNet has no transformer blocks with {'ff.net.2' if kind == FFN2 else 'attn2.to_k/to_v'}"
        )
    return CheckpointLayers(keys, shapes, family_of(context))
