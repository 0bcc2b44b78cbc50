"""Forget-It-All (FIA): training-free multi-concept unlearning for Stable Diffusion UNets.

Pure PyTorch; never imports ComfyUI. The stages, in order:

    find_target_layers(unet)                      -> UNetTargets
    SaliencyCollector(targets, plan, ...)         -> ConceptSaliency   (Stage 1, hooks)
    localize_concepts(saliency, r1, r2)           -> ConceptMasks      (Stage 2)
    fuse(concept_masks, alpha)                    -> FIAMask           (Stage 3)
    FIAMask.save / FIAMask.load / masked_weight                        (sharing, applying)
"""

import importlib

# Imported on first use (PEP 562): `python -m fia_engine` must not spend seconds importing
# torch before its entry point can turn a Ctrl-C or a bad argument into one error line.
_EXPORTS = {
    "CorruptMaskError": "errors",
    "FIAError": "errors",
    "InvalidInputError": "errors",
    "MaskMismatchError": "errors",
    "UnsupportedArchitectureError": "errors",
    "agnostic_threshold": "fusion",
    "fuse": "fusion",
    "TargetLayer": "layers",
    "UNetTargets": "layers",
    "find_target_layers": "layers",
    "FIAMask": "masks",
    "ConceptMasks": "neurons",
    "localize_concepts": "neurons",
    "ConceptSaliency": "saliency",
    "GroupPlan": "saliency",
    "SaliencyCollector": "saliency",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "ConceptMasks",
    "ConceptSaliency",
    "CorruptMaskError",
    "FIAError",
    "FIAMask",
    "GroupPlan",
    "InvalidInputError",
    "MaskMismatchError",
    "SaliencyCollector",
    "TargetLayer",
    "UNetTargets",
    "UnsupportedArchitectureError",
    "agnostic_threshold",
    "find_target_layers",
    "fuse",
    "localize_concepts",
]
__version__ = "0.1.0"
