"""ScaPre: a closed-form, many-concept edit of the UNet's cross-attention keys and values.

Pure PyTorch, like the rest of the engine. The public API, in order of use:

    find_cross_attention_projections(unet)      -> CrossAttentionTargets (to_k / to_v of every attn2)
    select_token_rows(embeddings, lengths)      -> the token rows the edit maps
    row_owners(lengths)                         -> which prompt (concept) each of those rows came from
    compute_edit(weights, concepts, anchors, preserve, ScaPreSettings(), concept_ids=...) -> ScaPreEdit
    ScaPreEdit.save / load / check_compatible / edited_weight / summary
    scapre_unlearn(folder, concepts, ...), apply_edit_to_folder(...)   (diffusers folders)

The math and every interpretation of the paper are in docs/scapre.md.
"""

from .compute import compute_edit
from .delta import LayerDelta
from .edit import ScaPreEdit, check_scale
from .files import apply_edit_to_folder
from .layers import CrossAttentionTarget, CrossAttentionTargets, find_cross_attention_projections
from .runner import edit_components, scapre_unlearn
from .settings import ScaPreSettings
from .tokens import row_owners, rows_at_positions, select_token_rows

__all__ = [
    "CrossAttentionTarget",
    "CrossAttentionTargets",
    "LayerDelta",
    "ScaPreEdit",
    "ScaPreSettings",
    "apply_edit_to_folder",
    "check_scale",
    "compute_edit",
    "edit_components",
    "find_cross_attention_projections",
    "row_owners",
    "rows_at_positions",
    "scapre_unlearn",
    "select_token_rows",
]
