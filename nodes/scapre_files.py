"""FIASaveScaPreEdit / FIALoadScaPreEdit: ScaPre edits as safetensors files beside the masks in `models/fia_masks`.

Separate nodes rather than a mode of FIASaveMask / FIALoadMask (the socket types differ; see
saved_file_nodes.py, which holds what the save and load nodes of both kinds do).
"""

from __future__ import annotations

from ..fia_engine.scapre import ScaPreEdit
from ..fia_engine.scapre.edit import FORMAT as EDIT_FORMAT
from .saved_file_nodes import LoadFileNode, SavedKind, SaveFileNode
from .summary import scapre_summary
from .types import ScaPreEdit as ScaPreEditType

EDIT_FILES = SavedKind(
    EDIT_FORMAT, "edit", "ScaPre edit", ScaPreEditType, ScaPreEdit.load, scapre_summary, default_name="scapre_edit"
)


class FIASaveScaPreEdit(SaveFileNode):
    KIND = EDIT_FILES
    DISPLAY_NAME = "FIA Save ScaPre Edit"
    DESCRIPTION = (
        "Saves a ScaPre edit to models/fia_masks as a safetensors file (low-rank factors and metadata: "
        "concepts, anchor, settings, model fingerprint), to share like a LoRA."
    )
    ITEM_TOOLTIP = "The edit to save, from FIA ScaPre Erase."


class FIALoadScaPreEdit(LoadFileNode):
    KIND = EDIT_FILES
    DISPLAY_NAME = "FIA Load ScaPre Edit"
    DESCRIPTION = "Loads a ScaPre edit from models/fia_masks (safetensors only; validated before use)."
    LIST_TOOLTIP = "A ScaPre edit file in models/fia_masks (FIA masks there are listed by FIA Load Mask)."
    OUTPUT_TOOLTIP = "The loaded edit, for FIA Apply ScaPre Edit."
