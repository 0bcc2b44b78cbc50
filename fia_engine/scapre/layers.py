"""Find the cross-attention key and value projections ScaPre edits, by module structure.

Every transformer block of an SD-family UNet has a self-attention ``attn1``, a
cross-attention ``attn2`` and a feed-forward ``ff``. The blocks (and their canonical names
``down.0.0.0`` ... with both host spellings) come from FIA's own walker in
``fia_engine.layers``, so FIA and ScaPre agree on every name; ScaPre then takes the
``to_k`` and ``to_v`` linears of each block's ``attn2``. Their input is the text encoder's
token embeddings, so all of them share one input width: the cross-attention context dim.
Canonical projection names append the kind: ``down.0.0.0.to_k``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UnsupportedArchitectureError
from ..layers import _describe, canonical_to_diffusers, diffusers_to_canonical, family_of, find_target_layers

KINDS = ("to_k", "to_v")
_FFN2_SUFFIX = ".ff.net.2"
_DIFFUSERS_PROJECTION = re.compile(r"^(?P<block>.+\.transformer_blocks\.\d+)\.attn2\.(?P<kind>to_k|to_v)$")


@dataclass(frozen=True)
class CrossAttentionTarget:
    """One to_k or to_v linear: where it lives in the model at hand and what it is called elsewhere."""

    canonical: str  # down.0.0.0.to_k
    block: str  # down.0.0.0
    kind: str  # "to_k" or "to_v"
    module_path: str
    ldm_name: str
    diffusers_name: str
    shape: tuple[int, int]  # (d_out, d_in)
    module: nn.Linear


@dataclass(frozen=True)
class CrossAttentionTargets:
    """All cross-attention projections of one UNet, in forward order (to_k before to_v)."""

    targets: tuple[CrossAttentionTarget, ...]
    family: str
    context_dim: int

    def __iter__(self):
        return iter(self.targets)

    def __len__(self) -> int:
        return len(self.targets)

    def by_canonical(self) -> dict[str, CrossAttentionTarget]:
        return {target.canonical: target for target in self.targets}

    @property
    def shapes(self) -> dict[str, tuple[int, int]]:
        return {target.canonical: target.shape for target in self.targets}

    def weights(self) -> dict[str, torch.Tensor]:
        """canonical name -> the live weight (detached, not copied: read it, do not write it)."""
        return {target.canonical: target.module.weight.detach() for target in self.targets}

    def signature(self) -> dict[str, float]:
        """Mean |W| per projection: tells two checkpoints of one architecture apart (see FIA masks)."""
        return {name: weight_mean_abs(weight) for name, weight in self.weights().items()}


def weight_mean_abs(weight: torch.Tensor) -> float:
    return float(f"{weight.detach().float().abs().mean().item():.6g}")


def projection_to_diffusers(canonical: str) -> str:
    """``down.0.0.0.to_k`` -> ``down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k``."""
    block, _, kind = canonical.rpartition(".")
    if kind not in KINDS:
        raise ValueError(f"not a canonical ScaPre projection name: {canonical!r}")
    return canonical_to_diffusers(block).removesuffix(_FFN2_SUFFIX) + f".attn2.{kind}"


def diffusers_to_projection(name: str) -> str:
    """The inverse of projection_to_diffusers; ValueError for any other module name."""
    match = _DIFFUSERS_PROJECTION.match(name)
    if not match:
        raise ValueError(f"not a diffusers cross-attention projection name: {name!r}")
    return f"{diffusers_to_canonical(match['block'] + _FFN2_SUFFIX)}.{match['kind']}"


def find_cross_attention_projections(unet: nn.Module) -> CrossAttentionTargets:
    """Every attn2 to_k / to_v of an SD-family UNet (ldm/ComfyUI or diffusers module tree).

    Raises UnsupportedArchitectureError, naming what was found, for anything else.
    """
    try:
        blocks = find_target_layers(unet)
    except UnsupportedArchitectureError as error:
        raise UnsupportedArchitectureError(
            f"ScaPre edits the cross-attention (attn2) to_k / to_v of a Stable Diffusion UNet's "
            f"transformer blocks and found no such blocks: {error}"
        ) from None
    targets = []
    for block in blocks:
        block_path = block.module_path.removesuffix(_FFN2_SUFFIX)
        attention = getattr(unet.get_submodule(block_path), "attn2", None)
        if attention is None:  # a transformer block without cross-attention has nothing to edit
            continue
        for kind in KINDS:
            module = getattr(attention, kind, None)
            if not isinstance(module, nn.Linear):
                raise UnsupportedArchitectureError(
                    f"{block_path}.attn2.{kind} is {type(module).__name__}, not a linear layer; "
                    f"ScaPre needs plain to_k / to_v projections ({_describe(unet)})"
                )
            targets.append(
                CrossAttentionTarget(
                    canonical=f"{block.canonical}.{kind}",
                    block=block.canonical,
                    kind=kind,
                    module_path=f"{block_path}.attn2.{kind}",
                    ldm_name=block.ldm_name.removesuffix(_FFN2_SUFFIX) + f".attn2.{kind}",
                    diffusers_name=block.diffusers_name.removesuffix(_FFN2_SUFFIX) + f".attn2.{kind}",
                    shape=(module.out_features, module.in_features),
                    module=module,
                )
            )
    if not targets:
        raise UnsupportedArchitectureError(
            f"ScaPre found {len(blocks)} transformer blocks but none has a cross-attention 'attn2' "
            f"with to_k / to_v in {_describe(unet)}"
        )
    widths = sorted({target.shape[1] for target in targets})
    if len(widths) != 1:
        raise UnsupportedArchitectureError(
            f"the cross-attention projections take inputs of several widths {widths}; ScaPre needs one "
            f"text-embedding width for all of them ({_describe(unet)})"
        )
    return CrossAttentionTargets(targets=tuple(targets), family=family_of(widths[0]), context_dim=widths[0])
