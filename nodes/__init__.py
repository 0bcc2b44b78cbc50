"""ComfyUI nodes of Forget-It-All (V3 schema). Loaded through the pack's comfy_entrypoint."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .apply_node import FIAApplyMask
from .fia_masks_folder import register_folder
from .fusion_node import FIAAgnosticFusion
from .localizer_node import FIANeuronLocalizer
from .lora_node import FIASaveScaPreLoRA
from .mask_files import FIALoadMask, FIASaveMask
from .report_node import FIAMaskReport
from .saliency_node import FIAConceptSaliencyCollector
from .scapre_files import FIALoadScaPreEdit, FIASaveScaPreEdit
from .scapre_node import FIAApplyScaPreEdit, FIAScaPreErase

NODES: list[type[io.ComfyNode]] = [
    FIAConceptSaliencyCollector,
    FIANeuronLocalizer,
    FIAAgnosticFusion,
    FIAApplyMask,
    FIASaveMask,
    FIALoadMask,
    FIAMaskReport,
    FIAScaPreErase,
    FIAApplyScaPreEdit,
    FIASaveScaPreEdit,
    FIALoadScaPreEdit,
    FIASaveScaPreLoRA,
]


class FIAExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> FIAExtension:
    register_folder()
    return FIAExtension()
