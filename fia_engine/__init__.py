"""Forget-It-All (FIA): training-free multi-concept unlearning for Stable Diffusion UNets.

Pure PyTorch; never imports ComfyUI. The stages, in order:

    find_target_layers(unet)                      -> UNetTargets
    SaliencyCollector(targets, plan, ...)         -> ConceptSaliency   (Stage 1, hooks)
    localize_concepts(saliency, r1, r2)           -> ConceptMasks      (Stage 2)
    fuse(concept_masks, alpha)                    -> FIAMask           (Stage 3)
    FIAMask.save / FIAMask.load / masked_weight                        (sharing, applying)
"""

from .errors import CorruptMaskError, FIAError, InvalidInputError, MaskMismatchError, UnsupportedArchitectureError
from .fusion import agnostic_threshold, fuse
from .layers import TargetLayer, UNetTargets, find_target_layers
from .masks import FIAMask
from .neurons import ConceptMasks, localize_concepts
from .saliency import ConceptSaliency, GroupPlan, SaliencyCollector

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
