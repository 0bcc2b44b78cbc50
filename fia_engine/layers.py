"""Find FIA's target layers in a UNet and give each one name that means the same in every host.

FIA watches the second linear of the feed-forward block (``ff.net.2``, after the GEGLU) in
every transformer block of a Stable Diffusion UNet. Two naming schemes exist for the same
module: ComfyUI / original ldm (``input_blocks.1.1.transformer_blocks.0.ff.net.2``) and
diffusers (``down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2``). Layers are found by
walking the module structure, not from a list of names, and each gets a canonical name
``down.<level>.<attention>.<block>``, ``mid.0.<block>`` or ``up.<level>.<attention>.<block>``
from which both host names follow.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass

from torch import nn

from .errors import UnsupportedArchitectureError

_FFN2_SUFFIX = ".ff.net.2"
# Marks of temporal (video) transformers or motion modules: their FFNs are not FIA's target.
_TEMPORAL_MARKS = ("time_stack", "temp_attentions", "motion_module", "temporal_transformer")
_CANONICAL = re.compile(r"^(down|mid|up)\.(\d+)\.(\d+)\.(\d+)$")
_DIFFUSERS = re.compile(
    r"^(down_blocks|mid_block|up_blocks)(?:\.(\d+))?\.attentions\.(\d+)\.transformer_blocks\.(\d+)\.ff\.net\.2$"
)

# Cross-attention context width -> the family it identifies.
_FAMILY_BY_CONTEXT = {768: "SD1.x", 1024: "SD2.x", 2048: "SDXL"}


@dataclass(frozen=True)
class TargetLayer:
    """One FFN2 linear: where it lives in the model at hand and what it is called elsewhere."""

    canonical: str
    module_path: str
    ldm_name: str
    diffusers_name: str
    shape: tuple[int, int]
    module: nn.Linear

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]


@dataclass(frozen=True)
class UNetTargets:
    """All target layers of one UNet, in forward order, plus what identifies the architecture."""

    layers: tuple[TargetLayer, ...]
    family: str
    context_dim: int

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def by_canonical(self) -> dict[str, TargetLayer]:
        return {layer.canonical: layer for layer in self.layers}

    @property
    def shapes(self) -> dict[str, tuple[int, int]]:
        return {layer.canonical: layer.shape for layer in self.layers}

    @property
    def fingerprint(self) -> str:
        return shape_fingerprint(self.shapes)

    @property
    def total_params(self) -> int:
        return sum(layer.numel for layer in self.layers)


def shape_fingerprint(shapes: dict[str, tuple[int, int]]) -> str:
    """A short hash of the target layers' names and shapes: equal iff the architecture matches."""
    text = "\n".join(f"{name}:{out}x{inp}" for name, (out, inp) in sorted(shapes.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def canonical_to_diffusers(canonical: str) -> str:
    match = _CANONICAL.match(canonical)
    if not match:
        raise ValueError(f"not a canonical FIA layer name: {canonical!r}")
    stage, level, attention, block = match.groups()
    prefix = "mid_block" if stage == "mid" else f"{stage}_blocks.{level}"
    return f"{prefix}.attentions.{attention}.transformer_blocks.{block}{_FFN2_SUFFIX}"


def diffusers_to_canonical(name: str) -> str:
    match = _DIFFUSERS.match(name)
    if not match:
        raise ValueError(f"not a diffusers FFN2 module name: {name!r}")
    blocks, level, attention, block = match.groups()
    stage = {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}[blocks]
    return f"{stage}.{level or 0}.{attention}.{block}"


def canonical_to_ldm(canonical: str, down_layers: list[int], up_layers: list[int]) -> str:
    """ldm name of a canonical layer, given the resnet count per level of the down and up path.

    In ldm each down level holds its resnet(+attention) blocks followed by one downsampler
    (none after the last level), after a leading conv_in block; each up level holds
    ``resnets`` blocks, the last one carrying the upsampler.
    """
    match = _CANONICAL.match(canonical)
    if not match:
        raise ValueError(f"not a canonical FIA layer name: {canonical!r}")
    stage, level, attention, block = match.groups()
    level, attention = int(level), int(attention)
    tail = f"1.transformer_blocks.{block}{_FFN2_SUFFIX}"
    if stage == "mid":
        return f"middle_block.{tail}"
    if stage == "down":
        index = 1 + sum(count + 1 for count in down_layers[:level]) + attention
        return f"input_blocks.{index}.{tail}"
    index = sum(up_layers[:level]) + attention
    return f"output_blocks.{index}.{tail}"


def _context_dim(unet: nn.Module) -> int:
    for name, module in unet.named_modules():
        if name.endswith("attn2.to_k") and isinstance(module, nn.Linear):
            return module.in_features
    return 0


def _describe(model: nn.Module) -> str:
    kinds = Counter(type(m).__name__ for m in model.modules())
    top = ", ".join(name for name, _ in model.named_children()) or "none"
    common = ", ".join(f"{k} x{n}" for k, n in kinds.most_common(6))
    return f"{type(model).__name__} (top-level children: {top}; most common modules: {common})"


def _ffn2_modules(unet: nn.Module) -> dict[str, nn.Linear]:
    return {
        name: module
        for name, module in unet.named_modules()
        if name.endswith(_FFN2_SUFFIX) and isinstance(module, nn.Linear)
    }


def _refuse_temporal(unet: nn.Module) -> None:
    for name, _ in unet.named_modules():
        if any(mark in name for mark in _TEMPORAL_MARKS):
            raise UnsupportedArchitectureError(
                f"{type(unet).__name__} has temporal (video) transformer modules (found {name!r}); "
                "FIA supports image UNets of the SD 1.x / 2.x / SDXL family only."
            )


def _ldm_layout(unet: nn.Module) -> dict[str, tuple[str, int, int]]:
    """Map an ldm block prefix (``input_blocks.4``) to (stage, level, attention index)."""

    def holding(blocks, kind: str) -> set[int]:
        return {i for i, block in enumerate(blocks) if any(type(m).__name__ == kind for m in block.children())}

    inputs, outputs = unet.input_blocks, unet.output_blocks
    return ldm_block_layout(
        range(len(inputs)), holding(inputs, "Downsample"), range(len(outputs)), holding(outputs, "Upsample")
    )


def ldm_block_layout(inputs, downsamplers: set[int], outputs, upsamplers: set[int]) -> dict[str, tuple[str, int, int]]:
    """ldm block prefix -> (stage, level, index within the level), from the input and output block
    indices in order and the ones holding a down- or upsampler.

    ``input_blocks.0`` is conv_in; each down level ends with its downsampler block (none after
    the last level); each up level ends with the block that carries its upsampler.
    """
    layout: dict[str, tuple[str, int, int]] = {}
    level, position = 0, 0
    for index in inputs:
        if index == 0:
            continue
        if index in downsamplers:
            level, position = level + 1, 0
            continue
        layout[f"input_blocks.{index}"] = ("down", level, position)
        position += 1
    layout["middle_block"] = ("mid", 0, 0)
    level, position = 0, 0
    for index in outputs:
        layout[f"output_blocks.{index}"] = ("up", level, position)
        position += 1
        if index in upsamplers:
            level, position = level + 1, 0
    return layout


def _ldm_counts(layout: dict[str, tuple[str, int, int]]) -> tuple[list[int], list[int]]:
    down, up = Counter(), Counter()
    for stage, level, _ in layout.values():
        if stage == "down":
            down[level] += 1
        elif stage == "up":
            up[level] += 1
    return [down[i] for i in range(len(down))], [up[i] for i in range(len(up))]


def _diffusers_counts(unet: nn.Module) -> tuple[list[int], list[int]]:
    down = [len(block.resnets) for block in unet.down_blocks]
    up = [len(block.resnets) for block in unet.up_blocks]
    return down, up


def _forward_order(layer: TargetLayer) -> tuple[int, ...]:
    stage, *numbers = layer.canonical.split(".")
    return ({"down": 0, "mid": 1, "up": 2}[stage], *map(int, numbers))


def find_target_layers(unet: nn.Module) -> UNetTargets:
    """Discover every FFN2 target layer of an SD-family UNet (ldm/ComfyUI or diffusers).

    Raises UnsupportedArchitectureError, naming what was found, for anything else.
    """
    _refuse_temporal(unet)
    found = _ffn2_modules(unet)
    is_ldm = all(hasattr(unet, a) for a in ("input_blocks", "middle_block", "output_blocks"))
    is_diffusers = all(hasattr(unet, a) for a in ("down_blocks", "mid_block", "up_blocks"))
    if not found or not (is_ldm or is_diffusers):
        raise UnsupportedArchitectureError(
            f"no FIA target layers: FIA needs a UNet with transformer blocks whose feed-forward "
            f"ends in 'ff.net.2' (SD 1.x / 2.x / SDXL); found {len(found)} such layers in "
            f"{_describe(unet)}. DiT / MMDiT models (SD3, Flux, ...) are not supported."
        )
    layers = []
    if is_ldm:
        layout = _ldm_layout(unet)
        down_counts, up_counts = _ldm_counts(layout)
    else:
        down_counts, up_counts = _diffusers_counts(unet)
    for path, module in found.items():
        if is_ldm:
            prefix = path.split(".1.transformer_blocks.")[0]
            if prefix not in layout:
                raise UnsupportedArchitectureError(
                    f"FFN layer {path!r} is outside the UNet's down/mid/up transformer stages of {_describe(unet)}"
                )
            stage, level, attention = layout[prefix]
            block = path.split(".transformer_blocks.")[1].split(".")[0]
            canonical = f"{stage}.{level}.{attention}.{block}"
        else:
            try:
                canonical = diffusers_to_canonical(path)
            except ValueError:
                raise UnsupportedArchitectureError(
                    f"FFN layer {path!r} is outside the UNet's down/mid/up attentions of {_describe(unet)}"
                ) from None
        layers.append(
            TargetLayer(
                canonical=canonical,
                module_path=path,
                ldm_name=canonical_to_ldm(canonical, down_counts, up_counts),
                diffusers_name=canonical_to_diffusers(canonical),
                shape=(module.out_features, module.in_features),
                module=module,
            )
        )
    layers.sort(key=_forward_order)
    context = _context_dim(unet)
    return UNetTargets(layers=tuple(layers), family=family_of(context), context_dim=context)


def family_of(context_dim: int) -> str:
    """The model family a cross-attention context width identifies."""
    return _FAMILY_BY_CONTEXT.get(context_dim, f"UNet(context={context_dim})")


def weight_signature(targets: UNetTargets) -> dict[str, float]:
    """Mean |W| per layer: tells two checkpoints of one architecture apart, tolerant to dtype."""
    return {
        layer.canonical: float(f"{layer.module.weight.detach().float().abs().mean().item():.6g}") for layer in targets
    }


def signatures_match(a: dict[str, float], b: dict[str, float], rel_tol: float = 1e-3) -> bool:
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=rel_tol) for k in a)
