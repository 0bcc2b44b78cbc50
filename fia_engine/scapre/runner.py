"""Run ScaPre on a local diffusers Stable Diffusion folder (``save_pretrained`` layout).

The folder's own tokenizer and text encoder turn the concept, anchor, preserve and empty
prompts into token embeddings exactly as the pipeline does at generation time (padded to
the encoder's length; fia_engine.diffusers_runner.encode_prompts), and the UNet's to_k /
to_v weights are read from the loaded model. Each concept's prompt is the concept text
itself (``"golf ball"``), as in UCE; see docs/scapre.md for the token positions used.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..diffusers_runner import DiffusersComponents, check_pipeline_folder, encode_prompts, load_components
from ..errors import InvalidInputError
from ..prompts import parse_concepts
from .compute import compute_edit
from .edit import ScaPreEdit
from .layers import find_cross_attention_projections
from .settings import ScaPreSettings
from .tokens import row_owners, rows_at_positions, select_token_rows

logger = logging.getLogger(__name__)


def check_prompts(concepts, anchor: str, preserve) -> tuple[tuple[str, ...], str, tuple[str, ...]]:
    """Parse and cross-check the prompt lists before anything slow happens."""
    concepts = parse_concepts(concepts)
    preserve = parse_concepts(preserve) if _has_items(preserve) else ()
    anchor = (anchor or "").strip()
    lowered = {c.lower() for c in concepts}
    both = [p for p in preserve if p.lower() in lowered]
    if both:
        raise InvalidInputError(f"{both} are listed both to erase and to preserve; list each in one place only")
    if anchor.lower() in lowered:
        raise InvalidInputError(f"the anchor {anchor!r} is one of the concepts to erase; choose another anchor")
    return concepts, anchor, preserve


def _has_items(items) -> bool:
    if items is None:
        return False
    if isinstance(items, str):
        return bool(items.replace(",", "").strip())
    return any(item and str(item).strip() for item in items)


def token_lengths(components: DiffusersComponents, texts: list[str]) -> list[int]:
    """Real tokens per prompt (start and end token included), truncated as encode_prompts truncates."""
    tokenizer = components.tokenizer
    length = min(tokenizer.model_max_length, components.text_encoder.config.max_position_embeddings)
    return [len(ids) for ids in tokenizer(texts, truncation=True, max_length=length).input_ids]


def encode_token_rows(components: DiffusersComponents, texts: list[str]) -> tuple[torch.Tensor, list[int]]:
    """The edited token rows of each prompt (select_token_rows) and the prompts' lengths."""
    lengths = token_lengths(components, texts)
    return select_token_rows(encode_prompts(components, texts), lengths), lengths


@torch.no_grad()
def edit_components(
    components: DiffusersComponents,
    concepts,
    anchor: str = "",
    preserve=(),
    settings: ScaPreSettings | None = None,
) -> ScaPreEdit:
    """ScaPre on already loaded components; the model is not modified."""
    settings = (settings or ScaPreSettings()).validate()
    concepts, anchor, preserve = check_prompts(concepts, anchor, preserve)
    targets = find_cross_attention_projections(components.unet)
    concept_rows, lengths = encode_token_rows(components, list(concepts))
    anchor_rows = rows_at_positions(encode_prompts(components, [anchor]), lengths)
    empty_rows = rows_at_positions(encode_prompts(components, [""]), lengths)
    preserve_rows = encode_token_rows(components, list(preserve))[0] if preserve else None
    metadata = {
        "concepts": list(concepts),
        "anchor": anchor,
        "preserve": list(preserve),
        "family": targets.family,
        "source": components.source,
    }
    return compute_edit(
        targets.weights(),
        concept_rows,
        anchor_rows,
        preserve_rows,
        settings,
        empty_tokens=empty_rows,
        metadata=metadata,
        concept_ids=row_owners(lengths),  # one prompt per concept
    )


def scapre_unlearn(
    pipeline_dir: str | Path,
    concepts,
    anchor: str = "",
    preserve=(),
    settings: ScaPreSettings | None = None,
    device: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> ScaPreEdit:
    """Load a diffusers folder's UNet and text encoder and compute the ScaPre edit for ``concepts``."""
    settings = (settings or ScaPreSettings()).validate()
    check_prompts(concepts, anchor, preserve)  # fail before loading, not after it
    components = load_components(check_pipeline_folder(pipeline_dir), device, dtype)
    return edit_components(components, concepts, anchor, preserve, settings)
