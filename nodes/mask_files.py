"""FIASaveMask / FIALoadMask: masks as safetensors files in ComfyUI's `models/fia_masks` folder.

ScaPre edits (nodes/scapre_files.py) live in the same folder; what the save and load nodes of
both kinds do is saved_file_nodes.py's, the folder handling fia_masks_folder.py's.
"""

from __future__ import annotations

from ..fia_engine.masks import FORMAT as MASK_FORMAT
from ..fia_engine.masks import FIAMask
from .saved_file_nodes import LoadFileNode, SavedKind, SaveFileNode
from .summary import mask_summary
from .types import Mask

MASK_FILES = SavedKind(MASK_FORMAT, "mask", "mask", Mask, FIAMask.load, mask_summary, default_name="fia_mask")


class FIASaveMask(SaveFileNode):
    KIND = MASK_FILES
    DISPLAY_NAME = "FIA Save Mask"
    DESCRIPTION = "Saves a mask to models/fia_masks as a small safetensors file that others can load and apply."
    ITEM_TOOLTIP = "The mask to save."


class FIALoadMask(LoadFileNode):
    KIND = MASK_FILES
    DISPLAY_NAME = "FIA Load Mask"
    DESCRIPTION = "Loads a mask from models/fia_masks (safetensors only; validated before use)."
    LIST_TOOLTIP = "A mask file in models/fia_masks (ScaPre edits there are listed by FIA Load ScaPre Edit)."
    OUTPUT_TOOLTIP = "The loaded mask."
