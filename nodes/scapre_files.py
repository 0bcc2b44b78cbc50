"""FIASaveScaPreEdit / FIALoadScaPreEdit: ScaPre edits as safetensors files beside the masks in `models/fia_masks`.

Separate nodes rather than a mode of FIASaveMask / FIALoadMask: a mask and an edit travel on
different socket types (FIA_MASK, FIA_SCAPRE_EDIT), so a single load node would need an
untyped output and would let a mask be linked into an edit's input. The folder, the naming
rules and the format-filtered file list are shared (fia_masks_folder.py).
"""

from __future__ import annotations

from comfy_api.latest import io

from ..fia_engine.scapre import ScaPreEdit
from ..fia_engine.scapre.edit import FORMAT as EDIT_FORMAT
from .fia_masks_folder import files_of_format, full_path, modified, save_inputs, saved_as, target_path
from .summary import scapre_summary, ui
from .types import ScaPreEdit as ScaPreEditType


class FIASaveScaPreEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIASaveScaPreEdit",
            display_name="FIA Save ScaPre Edit",
            category="FIA unlearning",
            description=(
                "Saves a ScaPre edit to models/fia_masks as a safetensors file (low-rank factors and metadata: "
                "concepts, anchor, settings, model fingerprint), to share like a LoRA."
            ),
            is_output_node=True,
            inputs=[
                ScaPreEditType.Input("edit", tooltip="The edit to save, from FIA ScaPre Erase."),
                *save_inputs("scapre_edit"),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, edit: ScaPreEdit, name: str, overwrite: bool) -> io.NodeOutput:
        path = edit.save(target_path(name, overwrite, what="edit"))
        summary = scapre_summary(edit)
        summary["saved_as"] = saved_as(path)
        return io.NodeOutput(ui=ui(summary))


class FIALoadScaPreEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIALoadScaPreEdit",
            display_name="FIA Load ScaPre Edit",
            category="FIA unlearning",
            description="Loads a ScaPre edit from models/fia_masks (safetensors only; validated before use).",
            inputs=[
                io.Combo.Input(
                    "edit_name",
                    options=files_of_format(EDIT_FORMAT),
                    tooltip="A ScaPre edit file in models/fia_masks (FIA masks there are listed by FIA Load Mask).",
                ),
            ],
            outputs=[ScaPreEditType.Output(tooltip="The loaded edit, for FIA Apply ScaPre Edit.")],
        )

    @classmethod
    def fingerprint_inputs(cls, edit_name: str):
        return modified(edit_name)

    @classmethod
    def execute(cls, edit_name: str) -> io.NodeOutput:
        edit = ScaPreEdit.load(full_path(edit_name, "ScaPre edit"))
        return io.NodeOutput(edit, ui=ui(scapre_summary(edit)))
