"""What FIA nodes show on the canvas after they ran (read by web/fia_summary.js)."""

from __future__ import annotations

from ..fia_engine.masks import FIAMask
from ..fia_engine.neurons import ConceptMasks


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
