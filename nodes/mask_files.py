"""FIASaveMask / FIALoadMask: masks as safetensors files in ComfyUI's `models/fia_masks` folder.

ScaPre edits (nodes/scapre_files.py) live in the same folder; the folder handling both share
(listing by format, names, where to save) is fia_masks_folder.py.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..fia_engine.masks import FORMAT as MASK_FORMAT
from ..fia_engine.masks import FIAMask
from .fia_masks_folder import files_of_format, full_path, modified, save_inputs, saved_as, target_path
from .summary import mask_summary, ui
from .types import Mask


class FIASaveMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIASaveMask",
            display_name="FIA Save Mask",
            category="FIA unlearning",
            description="Saves a mask to models/fia_masks as a small safetensors file that others can load and apply.",
            is_output_node=True,
            inputs=[
                Mask.Input("mask", tooltip="The mask to save."),
                *save_inputs("fia_mask"),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, mask: FIAMask, name: str, overwrite: bool) -> io.NodeOutput:
        path = mask.save(target_path(name, overwrite, what="mask"))
        summary = mask_summary(mask)
        summary["saved_as"] = saved_as(path)
        return io.NodeOutput(ui=ui(summary))


class FIALoadMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIALoadMask",
            display_name="FIA Load Mask",
            category="FIA unlearning",
            description="Loads a mask from models/fia_masks (safetensors only; validated before use).",
            inputs=[
                io.Combo.Input(
                    "mask_name",
                    options=files_of_format(MASK_FORMAT),
                    tooltip="A mask file in models/fia_masks (ScaPre edits there are listed by FIA Load ScaPre Edit).",
                ),
            ],
            outputs=[Mask.Output(tooltip="The loaded mask.")],
        )

    @classmethod
    def fingerprint_inputs(cls, mask_name: str):
        return modified(mask_name)

    @classmethod
    def execute(cls, mask_name: str) -> io.NodeOutput:
        mask = FIAMask.load(full_path(mask_name, "mask"))
        return io.NodeOutput(mask, ui=ui(mask_summary(mask)))
