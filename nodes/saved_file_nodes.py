"""The save and load nodes of the files in `models/fia_masks`, written once for masks and edits.

An FIA mask and a ScaPre edit travel on different socket types (FIA_MASK, FIA_SCAPRE_EDIT), so
each kind has its own pair of nodes: a single load node would need an untyped output and would
let a mask be linked into an edit's input. What the nodes do is the same for both kinds and is
here; mask_files.py and scapre_files.py declare each kind (SavedKind) and the nodes' words.
The folder, the naming rules and the format-filtered file list are fia_masks_folder.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from comfy_api.latest import io

from .fia_masks_folder import files_of_format, full_path, modified, save_inputs, saved_as, target_path
from .summary import ui


@dataclass(frozen=True)
class SavedKind:
    """One kind of file in models/fia_masks, as its save and load nodes handle it."""

    format: str  # the safetensors "format" entry: the load node lists only these files
    item: str  # the save node's input and the word in its messages: "mask", "edit"
    noun: str  # in the load node's messages: "mask", "ScaPre edit"
    socket: Any  # the io.Custom socket type: Mask, ScaPreEdit
    load: Callable[[str], Any]  # path -> the loaded, validated object (FIAMask.load)
    summary: Callable[[Any], dict]  # what the node shows on the canvas
    default_name: str  # the save node's default file name

    @property
    def file_input(self) -> str:
        """The load node's file list input: "mask_name", "edit_name"."""
        return f"{self.item}_name"


class SaveFileNode(io.ComfyNode):
    """Saves its input to models/fia_masks; a numbered name instead of overwriting unless asked."""

    KIND: ClassVar[SavedKind]
    DISPLAY_NAME: ClassVar[str]
    DESCRIPTION: ClassVar[str]
    ITEM_TOOLTIP: ClassVar[str]

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=cls.__name__,
            display_name=cls.DISPLAY_NAME,
            category="FIA unlearning",
            description=cls.DESCRIPTION,
            is_output_node=True,
            inputs=[
                cls.KIND.socket.Input(cls.KIND.item, tooltip=cls.ITEM_TOOLTIP),
                *save_inputs(cls.KIND.default_name),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, name: str, overwrite: bool, **item) -> io.NodeOutput:
        saved = item[cls.KIND.item]
        path = saved.save(target_path(name, overwrite, what=cls.KIND.item))
        summary = cls.KIND.summary(saved)
        summary["saved_as"] = saved_as(path)
        return io.NodeOutput(ui=ui(summary))


class LoadFileNode(io.ComfyNode):
    """Loads one of the files of its kind from models/fia_masks (safetensors only; validated)."""

    KIND: ClassVar[SavedKind]
    DISPLAY_NAME: ClassVar[str]
    DESCRIPTION: ClassVar[str]
    LIST_TOOLTIP: ClassVar[str]
    OUTPUT_TOOLTIP: ClassVar[str]

    @classmethod
    def define_schema(cls) -> io.Schema:
        files = io.Combo.Input(cls.KIND.file_input, options=files_of_format(cls.KIND.format), tooltip=cls.LIST_TOOLTIP)
        return io.Schema(
            node_id=cls.__name__,
            display_name=cls.DISPLAY_NAME,
            category="FIA unlearning",
            description=cls.DESCRIPTION,
            inputs=[files],
            outputs=[cls.KIND.socket.Output(tooltip=cls.OUTPUT_TOOLTIP)],
        )

    @classmethod
    def fingerprint_inputs(cls, **inputs):
        return modified(inputs[cls.KIND.file_input])

    @classmethod
    def execute(cls, **inputs) -> io.NodeOutput:
        loaded = cls.KIND.load(full_path(inputs[cls.KIND.file_input], cls.KIND.noun))
        return io.NodeOutput(loaded, ui=ui(cls.KIND.summary(loaded)))
