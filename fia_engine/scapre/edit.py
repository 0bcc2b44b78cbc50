"""The ScaPre edit: per-layer weight deltas for the cross-attention to_k / to_v, shared as safetensors.

A file holds, per canonical projection (``down.0.0.0.to_k``), either ``up.<name>`` and
``down.<name>`` (delta = up @ down) or ``dense.<name>``, all float32, and JSON strings as
metadata: format, version, model family, the fingerprint of the projections' shapes (an
architecture check), mean |W| per projection (a checkpoint check that tolerates
fp16/fp32), and what made the edit (concepts, anchor, preserve, settings, per-layer
statistics). Loading uses safetensors only (no pickle) and validates everything first.
The edit is applied as W + scale * delta; the source weights are never modified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from ..compatibility import Wording, check_compatible
from ..errors import CorruptMaskError, InvalidInputError, MaskMismatchError
from ..safetensors_files import FileKind, ModelFile
from .delta import LayerDelta

FORMAT = "scapre-edit"
FORMAT_VERSION = 1
_FILE_KIND = FileKind(FORMAT, FORMAT_VERSION, metadata_key="scapre", title="ScaPre edit", article="a")
MAX_SCALE = 10.0
_KINDS = ("up", "down", "dense")
_ON_ANOTHER_CHECKPOINT = "the edit was solved for other weights: check the result"
_WORDING = Wording("ScaPre edit", "ScaPre edit", "edit", "an", "cross-attention layers", _ON_ANOTHER_CHECKPOINT)


def check_scale(scale: float) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0.0 <= scale <= MAX_SCALE:
        raise InvalidInputError(
            f"scale must be between 0 and {MAX_SCALE:g} (1 = the edit as solved, 0 = no edit), got {scale!r}"
        )
    return float(scale)


def _validated_layers(
    path: Path, tensors: dict[str, torch.Tensor], shapes: dict[str, tuple[int, int]]
) -> dict[str, LayerDelta]:
    unknown = [key for key in tensors if key.partition(".")[0] not in _KINDS or key.partition(".")[2] not in shapes]
    if unknown:
        raise CorruptMaskError(f"{path}: tensors {unknown[:3]} belong to no layer listed in the metadata")
    layers = {}
    for name, (out, inp) in shapes.items():
        dense, up, down = (tensors.get(f"{kind}.{name}") for kind in ("dense", "up", "down"))
        for tensor in (dense, up, down):
            if tensor is not None and (tensor.dtype != torch.float32 or not bool(torch.isfinite(tensor).all())):
                raise CorruptMaskError(f"{path}: layer {name} holds non-float32 or non-finite values")
        if dense is not None and up is None and down is None:
            if tuple(dense.shape) != (out, inp):
                raise CorruptMaskError(f"{path}: layer {name} dense delta is {tuple(dense.shape)}, not {(out, inp)}")
            layers[name] = LayerDelta.full(dense)
        elif dense is None and up is not None and down is not None:
            if up.dim() != 2 or down.dim() != 2 or up.shape[0] != out or down.shape[1] != inp:
                raise CorruptMaskError(
                    f"{path}: layer {name} factors {tuple(up.shape)} @ {tuple(down.shape)} do not give {(out, inp)}"
                )
            if up.shape[1] != down.shape[0]:
                raise CorruptMaskError(f"{path}: layer {name} factors have ranks {up.shape[1]} and {down.shape[0]}")
            layers[name] = LayerDelta.low_rank(up, down)
        else:
            raise CorruptMaskError(f"{path}: layer {name} needs either up and down, or dense, and nothing else")
    if not layers:
        raise CorruptMaskError(f"{path}: the edit lists no layers")
    return layers


@dataclass
class ScaPreEdit(ModelFile):
    FILE_KIND: ClassVar[FileKind] = _FILE_KIND

    layers: dict[str, LayerDelta]
    shapes: dict[str, tuple[int, int]]
    family: str
    fingerprint: str
    weight_signature: dict[str, float] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    # -- numbers --------------------------------------------------------------------------------
    @property
    def stored_bytes(self) -> int:
        return 4 * sum(delta.stored_numel for delta in self.layers.values())

    @property
    def dense_bytes(self) -> int:
        return 4 * sum(out * inp for out, inp in self.shapes.values())

    def summary(self) -> dict:
        """Concepts, per-layer rank / storage / change, and the edited fraction of rows.

        A row counts as edited when its change is at least 10 % of the layer's largest row change.
        """
        stats = self.metadata.get("layer_stats", {})
        layers, edited_rows, total_rows = {}, 0, 0
        for name, delta in self.layers.items():
            norms = delta.row_norms()
            top = float(norms.max()) if norms.numel() else 0.0
            edited = int((norms >= 0.1 * top).sum()) if top > 0 else 0
            edited_rows, total_rows = edited_rows + edited, total_rows + norms.numel()
            weight_norm = stats.get(name, {}).get("weight_norm")
            layers[name] = {
                "rank": delta.rank,
                "stored_bytes": 4 * delta.stored_numel,
                "edited_rows": edited,
                "relative_change": float(norms.square().sum().sqrt()) / weight_norm if weight_norm else None,
                "blend": stats.get(name, {}).get("blend_mean"),  # mean share of the edit its rows keep
            }
        return {
            "concepts": list(self.metadata.get("concepts", [])),
            "anchor": self.metadata.get("anchor"),
            "preserve": list(self.metadata.get("preserve", [])),
            "mode": self.metadata.get("settings", {}).get("mode"),
            "family": self.family,
            "layers": layers,
            "layer_count": len(self.layers),
            "edited_fraction": edited_rows / max(1, total_rows),
            "stored_bytes": self.stored_bytes,
            "dense_bytes": self.dense_bytes,
        }

    # -- use ------------------------------------------------------------------------------------
    def delta(self, name: str) -> torch.Tensor:
        """The dense float32 delta of one layer (a new tensor)."""
        if name not in self.layers:
            raise MaskMismatchError(f"the ScaPre edit has no layer {name!r}; it has {sorted(self.layers)[:4]} ...")
        return self.layers[name].to_dense()

    def edited_weight(self, name: str, weight: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """W + scale * delta as a new tensor of W's dtype and device; ``weight`` is never modified."""
        scale = check_scale(scale)
        if name not in self.shapes:
            raise MaskMismatchError(f"the ScaPre edit has no layer {name!r}; it has {sorted(self.layers)[:4]} ...")
        if tuple(weight.shape) != tuple(self.shapes[name]):
            raise MaskMismatchError(
                f"layer {name}: weight shape {tuple(weight.shape)} != ScaPre edit shape {self.shapes[name]}"
            )
        delta = self.layers[name].to(weight.device).to_dense()
        return (weight.detach().to(delta.dtype) + scale * delta).to(weight.dtype)

    # -- compatibility --------------------------------------------------------------------------
    def check_compatible(
        self,
        shapes: dict[str, tuple[int, int]],
        signature: dict[str, float] | None = None,
        family: str | None = None,
    ) -> bool:
        """Refuse an edit for another architecture; warn (return False) for another checkpoint."""
        return check_compatible(self, _WORDING, shapes, signature, family)

    # -- files (save, load: safetensors_files.ModelFile) ---------------------------------------
    def file_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for name, delta in self.layers.items():
            parts = {"dense": delta.dense} if not delta.is_low_rank else {"up": delta.up, "down": delta.down}
            for kind, tensor in parts.items():
                tensors[f"{kind}.{name}"] = tensor.detach().to("cpu", torch.float32).contiguous()
        return tensors

    def file_entries(self) -> dict[str, str]:
        return {"stored_bytes": str(self.stored_bytes), "dense_bytes": str(self.dense_bytes)}

    content_from = staticmethod(_validated_layers)
