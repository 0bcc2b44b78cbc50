"""The custom socket types that connect the FIA nodes."""

from comfy_api.latest import io

Saliency = io.Custom("FIA_SALIENCY")
ConceptMasks = io.Custom("FIA_CONCEPT_MASKS")
Mask = io.Custom("FIA_MASK")
ScaPreEdit = io.Custom("FIA_SCAPRE_EDIT")
