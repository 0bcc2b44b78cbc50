"""What FIA nodes show on the canvas after they ran (read by web/fia_summary.js)."""

from __future__ import annotations

from ..fia_engine.masks import FIAMask
from ..fia_engine.neurons import ConceptMasks
from ..fia_engine.scapre import ScaPreEdit


def mask_summary(mask: FIAMask) -> dict:
    summary = mask.summary()
    return {
        "concepts": summary["concepts"],
        "pruned": summary["pruned"],
        "total": summary["total"],
        "pruned_percent": round(summary["pruned_percent"], 4),
        "agnostic_kept": summary["agnostic_kept"],
        "alpha": mask.metadata.get("alpha"),
        "mode": mask.metadata.get("mode"),
        "family": mask.family,
        "layers": [[name, round(100 * fraction, 4)] for name, fraction in summary["layers"].items()],
    }


def concept_masks_summary(masks: ConceptMasks) -> dict:
    total = sum(out * inp for out, inp in masks.shapes.values())
    return {
        "concepts": list(masks.concepts),
        "selected_percent": {c: round(100 * masks.count(c) / total, 4) for c in masks.concepts},
        "r2": masks.r2,
        "mode": masks.mode,
        "family": masks.family,
    }


def ui(payload: dict) -> dict:
    return {"fia_summary": [payload]}


def scapre_summary(edit: ScaPreEdit, scale: float | None = None) -> dict:
    """What a ScaPre node shows: prompts, size against a dense patch, and the relative change per layer."""
    summary = edit.summary()
    payload = {
        "method": "ScaPre",
        "concepts": summary["concepts"],
        "anchor": summary["anchor"] or "",
        "preserve": summary["preserve"],
        "mode": summary["mode"],
        "family": edit.family,
        "layer_count": summary["layer_count"],
        "edited_rows_percent": round(100 * summary["edited_fraction"], 4),
        "stored_bytes": summary["stored_bytes"],
        "dense_bytes": summary["dense_bytes"],
        "layers": [
            [name, round(100 * (layer["relative_change"] or 0.0), 4)] for name, layer in summary["layers"].items()
        ],
        "layer_metric": "change",
    }
    if scale is not None:
        payload["scale"] = scale
    return payload
