"""Target-layer discovery and naming, for diffusers and ldm (ComfyUI) module trees."""

import pytest
import torch
from torch import nn

from fia_engine import UnsupportedArchitectureError, find_target_layers
from fia_engine.layers import canonical_to_diffusers, canonical_to_ldm, diffusers_to_canonical
from fia_engine.testing import tiny_unet

# The 16 FFN2 blocks of SD 1.5 in ldm / ComfyUI naming (attention stages only).
SD15_LDM = (
    [f"input_blocks.{i}" for i in (1, 2, 4, 5, 7, 8)] + ["middle_block"] + [f"output_blocks.{i}" for i in range(3, 12)]
)


def sd15_layout_unet():
    """SD 1.5's block layout (4 levels, 2 resnets each, attention on the first three), tiny widths."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=4,
        norm_num_groups=4,
    )


def test_sd15_layout_gives_sixteen_layers_with_ldm_names():
    targets = find_target_layers(sd15_layout_unet())
    assert len(targets) == 16
    assert targets.family == "SD1.x"
    assert [layer.ldm_name.split(".1.transformer_blocks")[0] for layer in targets] == SD15_LDM
    for layer in targets:
        assert layer.module_path == layer.diffusers_name
        assert layer.shape[1] == 4 * layer.shape[0]
        assert diffusers_to_canonical(layer.diffusers_name) == layer.canonical


def test_names_round_trip():
    assert canonical_to_diffusers("mid.0.0.3") == "mid_block.attentions.0.transformer_blocks.3.ff.net.2"
    assert diffusers_to_canonical("up_blocks.2.attentions.1.transformer_blocks.0.ff.net.2") == "up.2.1.0"
    # SDXL: 3 levels, 2 resnets down, 3 up; first level without attention
    assert canonical_to_ldm("down.2.1.9", [2, 2, 2], [3, 3, 3]) == "input_blocks.8.1.transformer_blocks.9.ff.net.2"
    assert canonical_to_ldm("up.0.2.0", [2, 2, 2], [3, 3, 3]) == "output_blocks.2.1.transformer_blocks.0.ff.net.2"


class Downsample(nn.Module):
    pass


class Upsample(nn.Module):
    pass


def _ldm_transformer(dim: int) -> nn.Module:
    block = nn.Module()
    block.ff = nn.Module()
    block.ff.net = nn.Sequential(nn.Linear(dim, 8 * dim), nn.Dropout(), nn.Linear(4 * dim, dim))
    transformer = nn.Module()
    transformer.transformer_blocks = nn.ModuleList([block])
    return transformer


def ldm_style_unet() -> nn.Module:
    """ldm's layout with one resnet per level, two levels: the walker must find levels itself."""
    unet = nn.Module()
    res = nn.Identity
    unet.input_blocks = nn.ModuleList(
        [
            nn.Sequential(nn.Identity()),  # conv_in
            nn.Sequential(res(), _ldm_transformer(4)),
            nn.Sequential(Downsample()),
            nn.Sequential(res(), _ldm_transformer(8)),
        ]
    )
    unet.middle_block = nn.Sequential(res(), _ldm_transformer(8), res())
    unet.output_blocks = nn.ModuleList(
        [
            nn.Sequential(res(), _ldm_transformer(8)),
            nn.Sequential(res(), _ldm_transformer(8), Upsample()),
            nn.Sequential(res(), _ldm_transformer(4)),
            nn.Sequential(res(), _ldm_transformer(4)),
        ]
    )
    return unet


def test_ldm_tree_is_walked_by_structure():
    targets = find_target_layers(ldm_style_unet())
    names = {layer.canonical: layer.module_path for layer in targets}
    assert names == {
        "down.0.0.0": "input_blocks.1.1.transformer_blocks.0.ff.net.2",
        "down.1.0.0": "input_blocks.3.1.transformer_blocks.0.ff.net.2",
        "mid.0.0.0": "middle_block.1.transformer_blocks.0.ff.net.2",
        "up.0.0.0": "output_blocks.0.1.transformer_blocks.0.ff.net.2",
        "up.0.1.0": "output_blocks.1.1.transformer_blocks.0.ff.net.2",
        "up.1.0.0": "output_blocks.2.1.transformer_blocks.0.ff.net.2",
        "up.1.1.0": "output_blocks.3.1.transformer_blocks.0.ff.net.2",
    }
    for layer in targets:  # the ldm name computed from the counts is the real path
        assert layer.ldm_name == layer.module_path
        assert layer.diffusers_name == canonical_to_diffusers(layer.canonical)


def test_unet_without_transformers_is_refused_with_what_was_found():
    from diffusers import UNet2DModel

    with pytest.raises(UnsupportedArchitectureError, match="found 0 such layers in UNet2DModel"):
        find_target_layers(
            UNet2DModel(
                sample_size=8,
                block_out_channels=(8, 8),
                norm_num_groups=4,
                down_block_types=("DownBlock2D",) * 2,
                up_block_types=("UpBlock2D",) * 2,
            )
        )


def test_mmdit_is_refused():
    from diffusers import SD3Transformer2DModel

    model = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        caption_projection_dim=16,
        pooled_projection_dim=16,
        out_channels=4,
    )
    with pytest.raises(UnsupportedArchitectureError, match="SD3Transformer2DModel"):
        find_target_layers(model)


def test_video_unet_is_refused():
    unet = ldm_style_unet()
    unet.input_blocks[1][1].time_stack = nn.ModuleList([_ldm_transformer(4)])
    with pytest.raises(UnsupportedArchitectureError, match="temporal"):
        find_target_layers(unet)


def test_tiny_unet_targets():
    targets = find_target_layers(tiny_unet())
    assert [layer.canonical for layer in targets] == ["down.0.0.0", "mid.0.0.0", "up.1.0.0", "up.1.1.0"]
