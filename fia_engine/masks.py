"""The FIA mask: which weights of which target layers to prune, kept sparse, shared as safetensors.

A mask holds, per canonical layer, the sorted flat indices of the pruned weights, plus
metadata: concepts, r1, r2 per concept, alpha, mode, counts, the model family and a
fingerprint of the target layers' shapes (an architecture check) and of their values
(mean |W| per layer: a checkpoint check that tolerates fp16/fp32).

Files hold int32 index tensors under ``pruned.<canonical>`` and JSON strings as metadata.
Loading uses safetensors only (no pickle) and validates everything before returning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from .compatibility import Wording, check_compatible
from .errors import CorruptMaskError, InvalidInputError, MaskMismatchError
from .safetensors_files import FileKind, ModelFile

FORMAT = "fia-mask"
FORMAT_VERSION = 1
_FILE_KIND = FileKind(FORMAT, FORMAT_VERSION, metadata_key="fia", title="FIA mask", article="an")
_PREFIX = "pruned."
_ON_ANOTHER_CHECKPOINT = "moving an edit to a finetune works, but check the result"
_WORDING = Wording("mask", "FIA mask", "mask", "a", "target layers", _ON_ANOTHER_CHECKPOINT)


def check_strength(strength: float) -> float:
    if not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise InvalidInputError(f"strength must be between 0 and 1 (1 = prune fully), got {strength!r}")
    return float(strength)


def prune_in_place_(weight: torch.Tensor, indices: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """W[idx] *= (1 - strength) on a tensor the caller owns (e.g. a host's patched copy)."""
    if indices.numel():
        flat = weight.view(-1)
        index = indices.to(device=weight.device, dtype=torch.long)
        if strength >= 1.0:
            flat.index_fill_(0, index, 0)
        else:
            flat.index_copy_(0, index, flat.index_select(0, index) * (1.0 - strength))
    return weight


def _validated_indices(
    path: Path, tensors: dict[str, torch.Tensor], shapes: dict[str, tuple[int, int]]
) -> dict[str, torch.Tensor]:
    names = {key[len(_PREFIX) :] for key in tensors if key.startswith(_PREFIX)}
    if names != set(shapes) or len(tensors) != len(names):
        raise CorruptMaskError(f"{path}: the index tensors do not match the layer list in the metadata")
    indices = {}
    for name, (out, inp) in shapes.items():
        idx = tensors[_PREFIX + name]
        if idx.dtype != torch.int32 or idx.dim() != 1:
            raise CorruptMaskError(f"{path}: layer {name} indices must be a 1-D int32 tensor")
        idx = idx.long()
        if idx.numel() and (idx[0] < 0 or idx[-1] >= out * inp or bool((idx[1:] <= idx[:-1]).any())):
            raise CorruptMaskError(f"{path}: layer {name} indices are out of range or not sorted and unique")
        indices[name] = idx
    return indices


@dataclass
class FIAMask(ModelFile):
    FILE_KIND: ClassVar[FileKind] = _FILE_KIND

    indices: dict[str, torch.Tensor]
    shapes: dict[str, tuple[int, int]]
    family: str
    fingerprint: str
    weight_signature: dict[str, float] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    # -- numbers --------------------------------------------------------------------------------
    @property
    def pruned_count(self) -> int:
        return sum(int(i.numel()) for i in self.indices.values())

    @property
    def total_count(self) -> int:
        return sum(out * inp for out, inp in self.shapes.values())

    @property
    def pruned_fraction(self) -> float:
        return self.pruned_count / max(1, self.total_count)

    def layer_fractions(self) -> dict[str, float]:
        return {name: int(self.indices[name].numel()) / (out * inp) for name, (out, inp) in self.shapes.items()}

    def summary(self) -> dict:
        return {
            "concepts": list(self.metadata.get("concepts", [])),
            "family": self.family,
            "pruned": self.pruned_count,
            "total": self.total_count,
            "pruned_percent": 100.0 * self.pruned_fraction,
            "agnostic_kept": self.metadata.get("agnostic_kept"),
            "layers": self.layer_fractions(),
        }

    # -- compatibility ----------------------------------------------------------------------------
    def check_compatible(
        self, shapes: dict[str, tuple[int, int]], weight_signature: dict[str, float] | None, family: str | None = None
    ) -> bool:
        """Refuse a mask for another architecture; warn (return False) for another checkpoint."""
        return check_compatible(self, _WORDING, shapes, weight_signature, family)

    def masked_weight(self, layer: str, weight: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """A pruned copy of ``weight``; the source tensor is never modified."""
        strength = check_strength(strength)
        if tuple(weight.shape) != tuple(self.shapes[layer]):
            raise MaskMismatchError(
                f"layer {layer}: weight shape {tuple(weight.shape)} != mask shape {self.shapes[layer]}"
            )
        return prune_in_place_(weight.detach().clone(), self.indices[layer], strength)

    # -- files (save, load: safetensors_files.ModelFile) -------------------------------------------
    def file_tensors(self) -> dict[str, torch.Tensor]:
        return {_PREFIX + name: idx.detach().to("cpu", torch.int32).contiguous() for name, idx in self.indices.items()}

    def file_entries(self) -> dict[str, str]:
        return {"pruned": str(self.pruned_count), "total": str(self.total_count)}

    content_from = staticmethod(_validated_indices)
