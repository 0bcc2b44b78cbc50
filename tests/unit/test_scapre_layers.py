"""Where ScaPre edits: the attn2 to_k / to_v of every transformer block, and which token rows."""

import pytest
import torch
from torch import nn

from fia_engine.errors import InvalidInputError, UnsupportedArchitectureError
from fia_engine.layers import find_target_layers
from fia_engine.scapre import find_cross_attention_projections, row_owners, rows_at_positions, select_token_rows
from fia_engine.scapre.layers import diffusers_to_projection, projection_to_diffusers
from fia_engine.testing import tiny_unet


def test_tiny_diffusers_unet_has_two_projections_per_transformer_block():
    unet = tiny_unet()
    targets = find_cross_attention_projections(unet)
    assert len(targets) == 2 * len(find_target_layers(unet)) == 8
    assert [t.canonical for t in targets][:4] == [
        "down.0.0.0.to_k",
        "down.0.0.0.to_v",
        "mid.0.0.0.to_k",
        "mid.0.0.0.to_v",
    ]
    for target in targets:
        assert target.module is unet.get_submodule(target.module_path)
        assert target.module_path == target.diffusers_name == projection_to_diffusers(target.canonical)
        assert diffusers_to_projection(target.diffusers_name) == target.canonical
        assert target.shape == (target.module.out_features, 32) and target.kind in ("to_k", "to_v")
    assert targets.context_dim == 32 and targets.family == "UNet(context=32)"


def test_sd15_layout_gives_thirty_two_projections_with_comfyui_names():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(8, 8, 16, 16), layers_per_block=2, cross_attention_dim=768,
        attention_head_dim=4, norm_num_groups=4,
    )  # fmt: skip
    targets = find_cross_attention_projections(unet)
    assert len(targets) == 32 and targets.family == "SD1.x"
    names = {t.canonical: t.ldm_name for t in targets}
    assert names["down.0.0.0.to_k"] == "input_blocks.1.1.transformer_blocks.0.attn2.to_k"
    assert names["mid.0.0.0.to_v"] == "middle_block.1.transformer_blocks.0.attn2.to_v"
    assert names["up.3.2.0.to_v"] == "output_blocks.11.1.transformer_blocks.0.attn2.to_v"
    assert targets.by_canonical()["up.1.0.0.to_k"].diffusers_name == (
        "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    )


class Downsample(nn.Module):
    pass


def _attention(query: int, context: int) -> nn.Module:
    attention = nn.Module()
    attention.to_q = nn.Linear(query, query, bias=False)
    attention.to_k = nn.Linear(context, query, bias=False)
    attention.to_v = nn.Linear(context, query, bias=False)
    return attention


def _ldm_transformer(dim: int, context: int = 12) -> nn.Module:
    block = nn.Module()
    block.attn1 = _attention(dim, dim)
    block.attn2 = _attention(dim, context)
    block.ff = nn.Module()
    block.ff.net = nn.Sequential(nn.Linear(dim, 8 * dim), nn.Dropout(), nn.Linear(4 * dim, dim))
    transformer = nn.Module()
    transformer.transformer_blocks = nn.ModuleList([block])
    return transformer


def comfy_style_unet() -> nn.Module:
    """ComfyUI's (ldm's) module tree: input_blocks / middle_block / output_blocks, attn2 in each block."""
    unet = nn.Module()
    unet.input_blocks = nn.ModuleList(
        [
            nn.Sequential(nn.Identity()),
            nn.Sequential(nn.Identity(), _ldm_transformer(4)),
            nn.Sequential(Downsample()),
            nn.Sequential(nn.Identity(), _ldm_transformer(8)),
        ]
    )
    unet.middle_block = nn.Sequential(nn.Identity(), _ldm_transformer(8), nn.Identity())
    unet.output_blocks = nn.ModuleList([nn.Sequential(nn.Identity(), _ldm_transformer(8))])
    return unet


def test_comfyui_tree_is_walked_by_structure():
    targets = find_cross_attention_projections(comfy_style_unet())
    paths = {t.canonical: t.module_path for t in targets}
    assert paths == {
        "down.0.0.0.to_k": "input_blocks.1.1.transformer_blocks.0.attn2.to_k",
        "down.0.0.0.to_v": "input_blocks.1.1.transformer_blocks.0.attn2.to_v",
        "down.1.0.0.to_k": "input_blocks.3.1.transformer_blocks.0.attn2.to_k",
        "down.1.0.0.to_v": "input_blocks.3.1.transformer_blocks.0.attn2.to_v",
        "mid.0.0.0.to_k": "middle_block.1.transformer_blocks.0.attn2.to_k",
        "mid.0.0.0.to_v": "middle_block.1.transformer_blocks.0.attn2.to_v",
        "up.0.0.0.to_k": "output_blocks.0.1.transformer_blocks.0.attn2.to_k",
        "up.0.0.0.to_v": "output_blocks.0.1.transformer_blocks.0.attn2.to_v",
    }
    assert all(t.ldm_name == t.module_path for t in targets)
    assert targets.context_dim == 12 and targets.shapes["down.1.0.0.to_v"] == (8, 12)


def test_non_unet_models_are_refused_with_what_was_found():
    with pytest.raises(UnsupportedArchitectureError, match="found 0 such layers in Sequential"):
        find_cross_attention_projections(nn.Sequential(nn.Linear(4, 4)))
    unet = comfy_style_unet()
    for block in unet.modules():
        if hasattr(block, "attn2"):
            block.attn2 = None
    with pytest.raises(UnsupportedArchitectureError, match="none has a cross-attention 'attn2'"):
        find_cross_attention_projections(unet)


def test_select_token_rows_skips_the_start_token_and_the_padding():
    embeddings = torch.arange(2 * 6 * 1, dtype=torch.float32).reshape(2, 6, 1)  # value = 6 * prompt + position
    rows = select_token_rows(embeddings, [4, 2])  # [BOS a b EOS pad pad], [BOS EOS pad ...]
    assert rows.flatten().tolist() == [1.0, 2.0, 3.0, 7.0]
    anchor = torch.arange(6, dtype=torch.float32).reshape(1, 6, 1) + 100
    assert rows_at_positions(anchor, [4, 2]).flatten().tolist() == [101.0, 102.0, 103.0, 101.0]
    assert row_owners([4, 2]).tolist() == [0, 0, 0, 1]  # the prompt each selected row came from
    with pytest.raises(InvalidInputError, match="at least the start and end token"):
        select_token_rows(embeddings, [1, 3])
    with pytest.raises(InvalidInputError, match="one per prompt"):
        select_token_rows(embeddings, [3])
