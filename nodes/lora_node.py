"""FIASaveScaPreLoRA: a ScaPre edit saved as a standard LoRA in ComfyUI's `models/loras` folder.

The file is what ``python -m fia_engine export-lora`` writes (fia_engine/scapre/lora.py): stock
LoRA loaders (LoraLoaderModelOnly here, A1111 / Forge, diffusers) apply it without this pack,
and at strength 1 it is the edit at scale 1.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..fia_engine.scapre import ScaPreEdit
from ..fia_engine.scapre.lora import FORMATS, export_lora
from .fia_masks_folder import save_inputs, saved_as, target_path
from .summary import scapre_summary, ui
from .types import ScaPreEdit as ScaPreEditType

LORAS = "loras"


class FIASaveScaPreLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIASaveScaPreLoRA",
            display_name="FIA Save ScaPre Edit as LoRA",
            category="FIA unlearning",
            description=(
                "Saves a ScaPre edit to models/loras as a standard LoRA file, exact: loaded with the stock "
                "Load LoRA node at strength 1 it gives the same model as FIA Apply ScaPre Edit at scale 1, and "
                "it can be shared with people who do not have this extension (A1111 / Forge, diffusers)."
            ),
            is_output_node=True,
            inputs=[
                ScaPreEditType.Input(
                    "edit", tooltip="The edit to save, from FIA ScaPre Erase or FIA Load ScaPre Edit."
                ),
                *save_inputs("scapre_lora"),
                io.Combo.Input(
                    "format",
                    options=list(FORMATS),
                    default="comfy",
                    tooltip="comfy: kohya key names, read by ComfyUI, A1111 / Forge and diffusers. "
                    "diffusers: PEFT names for diffusers' load_lora_weights (ComfyUI does not read them).",
                ),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, edit: ScaPreEdit, name: str, overwrite: bool, format: str) -> io.NodeOutput:
        path = target_path(name, overwrite, what="LoRA", folder_name=LORAS)
        written = export_lora(edit, path, format, overwrite=overwrite)
        summary = scapre_summary(edit)
        summary["saved_as"] = saved_as(written["path"], folder_name=LORAS)
        summary["lora_bytes"] = written["bytes"]
        summary["lora_ranks"] = sorted(set(written["ranks"].values()))
        return io.NodeOutput(ui=ui(summary))
