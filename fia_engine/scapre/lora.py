"""A ScaPre edit as a standard LoRA file, for loaders that know nothing of ScaPre.

The edit is, per to_k / to_v weight, a product up @ down (or a dense delta), so it is a LoRA
exactly: W' = W + strength * (alpha / rank) * up @ down with alpha = rank, i.e. strength 1
is the edit at scale 1. A dense delta D (d_out x d_in) is written as an exact factorisation
of rank min(d_out, d_in): I @ D or D @ I (multiplying by an identity is exact in floating
point). Layers the edit leaves unchanged (rank 0) are left out. Factors stay float32.

Two key spellings, each the one its loaders read:

- ``comfy`` (kohya): ``lora_unet_<diffusers module path with _>.lora_up.weight``,
  ``.lora_down.weight`` and ``.alpha``, the names of kohya's SD 1.x / 2.x trainer. ComfyUI's
  LoraLoader / LoraLoaderModelOnly map them to its weights (comfy/lora.py,
  model_lora_keys_unet, through comfy.utils.unet_to_diffusers) and scale by alpha / rank
  (comfy/weight_adapter/lora.py); diffusers' load_lora_weights converts them too
  (lora_conversion_utils._convert_non_diffusers_lora_to_diffusers, alpha as network_alphas).
- ``diffusers`` (PEFT): ``unet.<module path>.lora_B.weight`` (up) and ``.lora_A.weight``
  (down), with the PEFT LoraConfig (per-module ranks, alpha = rank) in the
  ``lora_adapter_metadata`` entry that load_lora_weights passes to LoraConfig
  (loaders/peft.py, load_lora_adapter). ComfyUI does not map these names to its weights
  (it expects ``unet.<path>.processor.to_k``): use ``comfy`` there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import InvalidInputError
from ..output_paths import atomic_file, check_output_file
from .delta import LayerDelta
from .edit import ScaPreEdit
from .layers import projection_to_diffusers

FORMATS = ("comfy", "diffusers")
METADATA_KEY = "fia_lora"


def lora_factors(delta: LayerDelta) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(up, down) with up @ down equal to the delta, or None for a zero-rank (unchanged) layer."""
    if delta.is_low_rank:
        up, down = delta.up, delta.down
    else:
        rows, cols = delta.shape
        dense = delta.dense
        identity = torch.eye(min(rows, cols), dtype=dense.dtype, device=dense.device)
        up, down = (identity, dense) if rows <= cols else (dense, identity)
    if up.shape[1] == 0:
        return None
    return up.detach().to("cpu", torch.float32).contiguous(), down.detach().to("cpu", torch.float32).contiguous()


def lora_tensors(edit: ScaPreEdit, format: str) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """(the LoRA file's tensors, rank per canonical projection) of the edit in ``format``."""
    if format not in FORMATS:
        raise ValueError(f"LoRA format must be one of {FORMATS}, got {format!r}")
    tensors, ranks = {}, {}
    for name, delta in edit.layers.items():
        factors = lora_factors(delta)
        if factors is None:
            continue
        up, down = factors
        module = projection_to_diffusers(name)
        ranks[name] = int(up.shape[1])
        if format == "comfy":
            key = "lora_unet_" + module.replace(".", "_")
            tensors[f"{key}.lora_up.weight"] = up
            tensors[f"{key}.lora_down.weight"] = down
            tensors[f"{key}.alpha"] = torch.tensor(float(ranks[name]))
        else:
            tensors[f"unet.{module}.lora_B.weight"] = up
            tensors[f"unet.{module}.lora_A.weight"] = down
    return tensors, ranks


def peft_metadata(ranks: dict[str, int]) -> dict:
    """diffusers' ``lora_adapter_metadata`` (the PEFT LoraConfig, ``unet.``-prefixed): alpha = rank everywhere."""
    modules = {projection_to_diffusers(name): rank for name, rank in ranks.items()}
    common = max(set(modules.values()), key=list(modules.values()).count) if modules else 1
    others = {module: rank for module, rank in modules.items() if rank != common}
    config = {
        "r": common,
        "lora_alpha": common,
        "rank_pattern": others,
        "alpha_pattern": others,
        "target_modules": sorted(modules),
        "use_dora": False,
        "lora_bias": False,
    }
    return {f"unet.{key}": value for key, value in config.items()}


def export_lora(edit: ScaPreEdit, out: str | os.PathLike, format: str = "comfy", overwrite: bool = False) -> dict:
    """Write the edit as a LoRA file; returns what was written (path, ranks, bytes)."""
    out = check_output_file(out, overwrite=overwrite, what="--out")
    tensors, ranks = lora_tensors(edit, format)
    if not ranks:
        raise InvalidInputError("the edit changes no weight (every layer has rank 0): there is no LoRA to write")
    record = {
        "source": "scapre-edit",
        "lora_format": format,
        "family": edit.family,
        "fingerprint": edit.fingerprint,
        "ranks": ranks,
        "skipped_unchanged": sorted(set(edit.layers) - set(ranks)),
        "strength": "1 = the edit at scale 1 (alpha = rank in every layer)",
        "edit": edit.metadata,
    }
    metadata = {"format": "pt", METADATA_KEY: json.dumps(record, default=str)}
    if format == "diffusers":
        metadata["lora_adapter_metadata"] = json.dumps(peft_metadata(ranks), sort_keys=True)
    with atomic_file(out) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return {"path": Path(out), "ranks": ranks, "bytes": Path(out).stat().st_size, "tensors": len(tensors)}
