"""FIASaveScaPreEdit / FIALoadScaPreEdit: ScaPre edits as safetensors files beside the masks in `models/fia_masks`.

Separate nodes rather than a mode of FIASaveMask / FIALoadMask: a mask and an edit travel on
different socket types (FIA_MASK, FIA_SCAPRE_EDIT), so a single load node would need an
untyped output and would let a mask be linked into an edit's input. The folder, the naming
rules and the format-filtered file list are shared (mask_files.py).
"""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io

from ..fia_engine.errors import InvalidInputError
from ..fia_engine.scapre import ScaPreEdit
from ..fia_engine.scapre.edit import FORMAT as EDIT_FORMAT
from .mask_files import FOLDER, files_of_format, target_path
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
                io.String.Input(
                    "name", default="scapre_edit", tooltip="File name (without extension); '/' for subfolders."
                ),
                io.Boolean.Input(
                    "overwrite",
                    default=False,
                    tooltip="Off: an existing file is kept and a numbered name is used instead.",
                ),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, edit: ScaPreEdit, name: str, overwrite: bool) -> io.NodeOutput:
        path = edit.save(target_path(name, overwrite, what="edit"))
        summary = scapre_summary(edit)
        summary["saved_as"] = os.path.relpath(path, folder_paths.get_folder_paths(FOLDER)[0])
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
        path = folder_paths.get_full_path(FOLDER, edit_name)
        return os.path.getmtime(path) if path else edit_name

    @classmethod
    def execute(cls, edit_name: str) -> io.NodeOutput:
        path = folder_paths.get_full_path(FOLDER, edit_name)
        if path is None:
            raise InvalidInputError(f"ScaPre edit {edit_name!r} is not in models/{FOLDER}")
        edit = ScaPreEdit.load(path)
        return io.NodeOutput(edit, ui=ui(scapre_summary(edit)))
