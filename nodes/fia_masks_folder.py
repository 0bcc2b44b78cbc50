"""ComfyUI's `models/fia_masks` folder, shared by the mask (mask_files.py) and ScaPre edit (scapre_files.py) nodes.

Both kinds are safetensors files in the one folder; each load node lists only the files of its
own kind, told apart by the ``format`` entry of the safetensors metadata. Save nodes check the
name they are given and never overwrite unless asked; the files themselves are written
atomically by the engine (fia_engine.safetensors_files).
"""

from __future__ import annotations

import os
import re

import folder_paths
from comfy_api.latest import io

from ..fia_engine.errors import FIAError, InvalidInputError
from ..fia_engine.safetensors_files import file_format

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


def full_path(name: str, what: str) -> str:
    """The path of the listed file ``name``; a clear error naming ``what`` ("mask") if it is gone."""
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        raise InvalidInputError(f"{what} {name!r} is not in models/{FOLDER}")
    return path


def modified(name: str):
    """What changes when the file ``name`` is rewritten (a load node's fingerprint_inputs)."""
    path = folder_paths.get_full_path(FOLDER, name)
    return os.path.getmtime(path) if path else name


def save_inputs(default_name: str) -> list[io.Input]:
    """A save node's "name" and "overwrite" inputs, worded for the rules of target_path."""
    return [
        io.String.Input("name", default=default_name, tooltip="File name (without extension); '/' for subfolders."),
        io.Boolean.Input(
            "overwrite",
            default=False,
            tooltip="Off: an existing file is kept and a numbered name is used instead.",
        ),
    ]


def target_path(name: str, overwrite: bool, what: str, folder_name: str = FOLDER) -> str:
    """Where to save the ``what`` ("mask") named ``name`` in the models folder ``folder_name`` (fia_masks,
    loras); a numbered name instead of overwriting unless asked."""
    stem = re.sub(r"\.safetensors$", "", name.strip())
    if not stem or not re.fullmatch(r"[\w\- .]+(/[\w\- .]+)*", stem) or ".." in stem:
        raise InvalidInputError(
            f"{what} name {name!r}: use letters, digits, '-', '_', '.', spaces and '/' for subfolders"
        )
    folder = folder_paths.get_folder_paths(folder_name)[0]
    path = os.path.join(folder, stem + ".safetensors")
    counter = 1
    while os.path.exists(path) and not overwrite:
        path = os.path.join(folder, f"{stem}_{counter:03d}.safetensors")
        counter += 1
    return path


def saved_as(path: str | os.PathLike, folder_name: str = FOLDER) -> str:
    """A saved file's name as the load nodes list it: relative to models/fia_masks (or ``folder_name``)."""
    return os.path.relpath(path, folder_paths.get_folder_paths(folder_name)[0])
