"""FIASaveMask / FIALoadMask: masks as safetensors files in ComfyUI's `models/fia_masks` folder."""

from __future__ import annotations

import os
import re

import folder_paths
from comfy_api.latest import io

from ..fia_engine.errors import InvalidInputError
from ..fia_engine.masks import FIAMask
from .summary import mask_summary, ui
from .types import Mask

FOLDER = "fia_masks"
EXTENSIONS = {".safetensors"}


def register_folder() -> None:
    """Make `models/fia_masks` known to ComfyUI (created on the first save, not at import)."""
    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[FOLDER] = ([os.path.join(folder_paths.models_dir, FOLDER)], EXTENSIONS)


def _target_path(name: str, overwrite: bool) -> str:
    stem = re.sub(r"\.safetensors$", "", name.strip())
    if not stem or not re.fullmatch(r"[\w\- .]+(/[\w\- .]+)*", stem) or ".." in stem:
        raise InvalidInputError(
            f"mask name {name!r}: use letters, digits, '-', '_', '.', spaces and '/' for subfolders"
        )
    folder = folder_paths.get_folder_paths(FOLDER)[0]
    path = os.path.join(folder, stem + ".safetensors")
    counter = 1
    while os.path.exists(path) and not overwrite:
        path = os.path.join(folder, f"{stem}_{counter:03d}.safetensors")
        counter += 1
    return path


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
                io.String.Input(
                    "name", default="fia_mask", tooltip="File name (without extension); '/' for subfolders."
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
    def execute(cls, mask: FIAMask, name: str, overwrite: bool) -> io.NodeOutput:
        path = mask.save(_target_path(name, overwrite))
        summary = mask_summary(mask)
        summary["saved_as"] = os.path.relpath(path, folder_paths.get_folder_paths(FOLDER)[0])
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
                    options=folder_paths.get_filename_list(FOLDER),
                    tooltip="A mask file in models/fia_masks.",
                ),
            ],
            outputs=[Mask.Output(tooltip="The loaded mask.")],
        )

    @classmethod
    def fingerprint_inputs(cls, mask_name: str):
        path = folder_paths.get_full_path(FOLDER, mask_name)
        return os.path.getmtime(path) if path else mask_name

    @classmethod
    def execute(cls, mask_name: str) -> io.NodeOutput:
        path = folder_paths.get_full_path(FOLDER, mask_name)
        if path is None:
            raise InvalidInputError(f"mask {mask_name!r} is not in models/{FOLDER}")
        mask = FIAMask.load(path)
        return io.NodeOutput(mask, ui=ui(mask_summary(mask)))
