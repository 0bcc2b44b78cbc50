"""FIASaveMask / FIALoadMask: masks as safetensors files in ComfyUI's `models/fia_masks` folder.

ScaPre edits (nodes/scapre_files.py) live in the same folder; each load node lists only the
files of its own kind, told apart by the ``format`` entry of the safetensors metadata.
"""

from __future__ import annotations

import os
import re

import folder_paths
from comfy_api.latest import io

from ..fia_engine.errors import FIAError, InvalidInputError
from ..fia_engine.masks import FORMAT as MASK_FORMAT
from ..fia_engine.masks import FIAMask
from ..fia_engine.scapre.edit import file_format
from .summary import mask_summary, ui
from .types import Mask

FOLDER = "fia_masks"
EXTENSIONS = {".safetensors"}
_FORMATS: dict[tuple[str, int, int], str | None] = {}  # (path, mtime, size) -> format: headers are read once


def register_folder() -> None:
    """Make `models/fia_masks` known to ComfyUI (created on the first save, not at import)."""
    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[FOLDER] = ([os.path.join(folder_paths.models_dir, FOLDER)], EXTENSIONS)


def files_of_format(format_name: str) -> list[str]:
    """The files in models/fia_masks whose safetensors metadata says ``format = format_name``."""
    names = []
    for name in folder_paths.get_filename_list(FOLDER):
        path = folder_paths.get_full_path(FOLDER, name)
        try:
            stat = os.stat(path)
        except (OSError, TypeError):
            continue
        key = (path, stat.st_mtime_ns, stat.st_size)
        if key not in _FORMATS:
            try:
                _FORMATS[key] = file_format(path)
            except FIAError:
                _FORMATS[key] = None  # not readable as safetensors: offered by no load node
        if _FORMATS[key] == format_name:
            names.append(name)
    return names


def target_path(name: str, overwrite: bool, what: str = "mask") -> str:
    """Where to save ``name`` in models/fia_masks; a numbered name instead of overwriting unless asked."""
    stem = re.sub(r"\.safetensors$", "", name.strip())
    if not stem or not re.fullmatch(r"[\w\- .]+(/[\w\- .]+)*", stem) or ".." in stem:
        raise InvalidInputError(
            f"{what} name {name!r}: use letters, digits, '-', '_', '.', spaces and '/' for subfolders"
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
        path = mask.save(target_path(name, overwrite))
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
                    options=files_of_format(MASK_FORMAT),
                    tooltip="A mask file in models/fia_masks (ScaPre edits there are listed by FIA Load ScaPre Edit).",
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
