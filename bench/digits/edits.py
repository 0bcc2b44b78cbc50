"""Apply a shared edit file (an FIA mask or a ScaPre edit) to a copy of the digits model's UNet."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from fia_engine import find_target_layers
from fia_engine.layers import weight_signature
from fia_engine.masks import FIAMask
from fia_engine.safetensors_files import file_format
from fia_engine.scapre import ScaPreEdit, find_cross_attention_projections
from fia_engine.scapre.edit import FORMAT as SCAPRE_FORMAT

from .unlearning import masked_unet


def edited_unet(unet: torch.nn.Module, path: Path) -> torch.nn.Module:
    """A copy of ``unet`` with the file's edit applied; refuses a file made for another model."""
    if file_format(path) == SCAPRE_FORMAT:
        return _scapre_unet(unet, ScaPreEdit.load(path))
    mask = FIAMask.load(path)
    targets = find_target_layers(unet)
    mask.check_compatible({t.canonical: t.shape for t in targets}, weight_signature(targets), targets.family)
    return masked_unet(unet, mask)


def _scapre_unet(unet: torch.nn.Module, edit: ScaPreEdit) -> torch.nn.Module:
    edited = copy.deepcopy(unet)
    targets = find_cross_attention_projections(edited)
    edit.check_compatible(targets.shapes, targets.signature(), targets.family)
    for target in targets:
        target.module.weight.data = edit.edited_weight(target.canonical, target.module.weight)
    return edited
