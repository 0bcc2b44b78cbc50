"""`bake`: an FIA mask or a ScaPre edit built into an ldm single-file checkpoint, streamed.

The tiny checkpoints are the tiny pipeline's UNet under ldm names (fia_engine.testing), plus
stand-ins for the text encoder and VAE and some metadata. That naming is checked against
diffusers' own ldm -> diffusers conversion, which also checks that `bake` edits the layers
`apply` edits in the diffusers folder, to the bit.
"""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from cli_expectations import fails, only_files
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from fia_engine.cli import main
from fia_engine.diffusers_files import unet_state_dict
from fia_engine.layers import canonical_to_diffusers
from fia_engine.masks import FIAMask
from fia_engine.safetensors_stream import read_header
from fia_engine.scapre import ScaPreEdit
from fia_engine.testing import ldm_unet_key, ldm_unet_state_dict, tiny_ldm_checkpoint, tiny_unet

FAST = ["--pairs", "3", "--steps", "10", "--saliency-steps", "3", "--r2", "0.05"]
PREFIX = "model.diffusion_model."


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def raw_tensors(path: Path) -> dict[str, bytes]:
    """Every tensor's bytes as stored in the file."""
    header = read_header(path)
    data = path.read_bytes()[header.data_start :]
    return {name: data[entry.begin : entry.end] for name, entry in header.entries.items()}


def metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


@pytest.fixture(scope="module")
def unet(tiny_pipeline):
    return UNet2DConditionModel.from_pretrained(str(tiny_pipeline / "unet")).eval()


@pytest.fixture(scope="module")
def checkpoint(unet, tmp_path_factory) -> Path:
    """fp16, as checkpoints are shared."""
    return tiny_ldm_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", unet, torch.float16)


@pytest.fixture(scope="module")
def checkpoint32(unet, tmp_path_factory) -> Path:
    return tiny_ldm_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny32.safetensors", unet, torch.float32)


@pytest.fixture(scope="module")
def mask_file(tiny_pipeline, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("masks") / "mask.safetensors"
    args = ["unlearn", "--pipeline", str(tiny_pipeline), "--concepts", "golf ball, church", "--out", str(out)]
    assert main([*args, *FAST]) == 0
    return out


def test_tiny_checkpoint_names_are_what_diffusers_converts_back(unet):
    """The test files are genuine ldm files: diffusers' converter maps every key back, exactly."""
    for model in (unet, tiny_unet(layers_per_block=2)):
        back = convert_ldm_unet_checkpoint(ldm_unet_state_dict(model), dict(model.config))
        original = model.state_dict()
        assert back.keys() == original.keys()
        assert all(torch.equal(back[key], original[key]) for key in original)


def ldm_key(unet, diffusers_key: str) -> str:
    config = unet.config
    up_attention = ["CrossAttn" in kind for kind in config.up_block_types]
    return PREFIX + ldm_unet_key(diffusers_key, config.layers_per_block, up_attention)


def test_bake_mask_zeroes_exactly_the_mask_and_copies_every_other_byte(unet, checkpoint, mask_file, tmp_path):
    before = digest(checkpoint)
    out = tmp_path / "baked.safetensors"
    assert main(["bake", "--checkpoint", str(checkpoint), "--mask", str(mask_file), "--out", str(out)]) == 0
    assert digest(checkpoint) == before, "the input changed"
    mask = FIAMask.load(mask_file)
    pruned = {ldm_key(unet, canonical_to_diffusers(name) + ".weight"): name for name in mask.indices}
    original, baked = load_file(str(checkpoint)), load_file(str(out))
    raw_in, raw_out = raw_tensors(checkpoint), raw_tensors(out)
    assert original.keys() == baked.keys() and len(pruned) == 4 and set(pruned) <= set(original)
    for key in original:
        if key not in pruned:
            assert raw_in[key] == raw_out[key], f"{key} is not byte-identical"
            continue
        flat_in, flat_out = original[key].view(-1), baked[key].view(-1)
        index = mask.indices[pruned[key]]
        assert bool((flat_out[index] == 0).all()), key
        keep = torch.ones_like(flat_in, dtype=torch.bool)
        keep[index] = False
        assert torch.equal(flat_out[keep], flat_in[keep]), key
        assert int((flat_in[index] != 0).sum()) > 0, f"{key}: nothing was pruned"
    meta_in, meta_out = metadata(checkpoint), metadata(out)
    assert {k: meta_out[k] for k in meta_in} == meta_in
    (record,) = json.loads(meta_out["fia_bake"])
    assert record["kind"] == "fia-mask" and record["strength"] == 1.0
    assert record["mask"]["concepts"] == ["golf ball", "church"] and record["pruned"] == mask.pruned_count
    assert record["source"] == checkpoint.name


@pytest.mark.parametrize("kind", ["mask", "edit"])
def test_bake_equals_apply_on_the_diffusers_folder(kind, tiny_pipeline, checkpoint32, mask_file, edit_file, tmp_path):
    """Same model twice (fp32): baking the ldm file and applying to the diffusers folder agree bit for bit."""
    source = mask_file if kind == "mask" else edit_file
    baked, applied = tmp_path / "baked.safetensors", tmp_path / "applied"
    assert main(["bake", "--checkpoint", str(checkpoint32), f"--{kind}", str(source), "--out", str(baked)]) == 0
    assert main(["apply", "--pipeline", str(tiny_pipeline), "--mask", str(source), "--out", str(applied)]) == 0
    config = json.loads((tiny_pipeline / "unet" / "config.json").read_text())
    from_bake = convert_ldm_unet_checkpoint(load_file(str(baked)), config)
    from_apply, original = unet_state_dict(applied), unet_state_dict(tiny_pipeline)
    assert from_bake.keys() == from_apply.keys()
    changed = [key for key in original if not torch.equal(original[key], from_apply[key])]
    assert len(changed) == (4 if kind == "mask" else 8)
    for key, weight in from_apply.items():
        assert torch.equal(from_bake[key], weight), key


def test_bake_edit_adds_the_delta_in_float32_and_rounds_once(checkpoint, edit_file, tmp_path):
    out = tmp_path / "edited.safetensors"
    args = ["bake", "--checkpoint", str(checkpoint), "--edit", str(edit_file), "--out", str(out), "--strength", "0.5"]
    assert main(args) == 0
    edit = ScaPreEdit.load(edit_file)
    original, baked = load_file(str(checkpoint)), load_file(str(out))
    key = PREFIX + "middle_block.1.transformer_blocks.0.attn2.to_v.weight"
    expected = (original[key].float() + 0.5 * edit.delta("mid.0.0.0.to_v")).half()
    assert baked[key].dtype == torch.float16 and torch.equal(baked[key], expected)
    changed = [k for k in original if not torch.equal(original[k], baked[k])]
    assert len(changed) == 8 and all(".attn2.to_" in k for k in changed)
    (record,) = json.loads(metadata(out)["fia_bake"])
    assert record["kind"] == "scapre-edit" and record["scale"] == 0.5 and record["edit"]["preserve"] == ["dog", "cat"]


def test_half_strength_mask_and_bakes_that_stack(checkpoint, mask_file, edit_file, tmp_path):
    half, both = tmp_path / "half.safetensors", tmp_path / "both.safetensors"
    args = ["bake", "--checkpoint", str(checkpoint), "--mask", str(mask_file), "--out", str(half), "--strength", "0.5"]
    assert main(args) == 0
    mask = FIAMask.load(mask_file)
    key = PREFIX + "middle_block.1.transformer_blocks.0.ff.net.2.weight"
    original, baked = load_file(str(checkpoint))[key].view(-1), load_file(str(half))[key].view(-1)
    index = mask.indices["mid.0.0.0"]
    assert torch.equal(baked[index], (original[index].float() * 0.5).half())
    assert main(["bake", "--checkpoint", str(half), "--edit", str(edit_file), "--out", str(both)]) == 0
    records = json.loads(metadata(both)["fia_bake"])
    assert [r["kind"] for r in records] == ["fia-mask", "scapre-edit"]
    assert torch.equal(load_file(str(both))[key], load_file(str(half))[key])


def test_overwrite(checkpoint, mask_file, tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"keep me")
    args = ["bake", "--checkpoint", str(checkpoint), "--mask", str(mask_file), "--out", str(out)]
    fails(args, capsys, "already exists; pass --overwrite")
    assert out.read_bytes() == b"keep me"
    only_files(tmp_path, {"out.safetensors"})
    assert main([*args, "--overwrite"]) == 0
    assert "fia_bake" in metadata(out)


def test_refuses_to_write_over_its_input(checkpoint, mask_file, tmp_path, capsys):
    before = digest(checkpoint)
    args = ["bake", "--checkpoint", str(checkpoint), "--mask", str(mask_file), "--out", str(checkpoint)]
    fails([*args, "--overwrite"], capsys, "never changes its input")
    assert digest(checkpoint) == before


def test_refuses_another_architecture(mask_file, edit_file, tmp_path, capsys):
    other = tiny_ldm_checkpoint(tmp_path / "wide.safetensors", tiny_unet(layers_per_block=2))
    for flag, source, layers in (("--mask", mask_file, "target"), ("--edit", edit_file, "cross-attention")):
        out = tmp_path / "out.safetensors"
        args = ["bake", "--checkpoint", str(other), flag, str(source), "--out", str(out)]
        fails(args, capsys, f"made for a UNet(context=32) model with other {layers} layers")
        only_files(tmp_path, {"wide.safetensors"})


def test_refuses_another_family_with_the_same_shapes(checkpoint, mask_file, tmp_path, capsys):
    """The FFN2 shapes of SD 1.x and 2.x agree; the context width read from attn2.to_k tells them apart."""
    tensors = load_file(str(checkpoint))
    for key in [k for k in tensors if ".attn2.to_k." in k or ".attn2.to_v." in k]:
        tensors[key] = torch.zeros(tensors[key].shape[0], 1024, dtype=tensors[key].dtype)
    other = tmp_path / "ctx1024.safetensors"
    save_file(tensors, str(other))
    out = tmp_path / "out.safetensors"
    fails(["bake", "--checkpoint", str(other), "--mask", str(mask_file), "--out", str(out)], capsys, "SD2.x")
    only_files(tmp_path, {"ctx1024.safetensors"})


def corrupt_files(checkpoint: Path, mask_file: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    data = checkpoint.read_bytes()
    files = {
        "truncated": (data[: len(data) - 100], "truncated"),
        "garbage": (b"\x00" * 64, "not a safetensors file"),
        "bad json": ((20).to_bytes(8, "little") + b"{not json at all!!!}" + b"\x00" * 8, "not a safetensors file"),
        "no unet": (mask_file.read_bytes(), "no Stable Diffusion UNet"),
    }
    paths = {}
    for name, (content, message) in files.items():
        path = folder / f"{name.replace(' ', '-')}.safetensors"
        path.write_bytes(content)
        paths[name] = (path, message)
    return paths


def test_refuses_corrupt_checkpoints(checkpoint, mask_file, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name, (path, message) in corrupt_files(checkpoint, mask_file, inputs).items():
        out = tmp_path / "out.safetensors"
        fails(["bake", "--checkpoint", str(path), "--mask", str(mask_file), "--out", str(out)], capsys, message)
        assert not out.exists(), name
        only_files(tmp_path, {"inputs"})


def test_refuses_the_wrong_kind_of_file_and_bad_strengths(checkpoint, mask_file, edit_file, tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    base = ["bake", "--checkpoint", str(checkpoint), "--out", str(out)]
    fails([*base, "--mask", str(edit_file)], capsys, "is a ScaPre edit, not an FIA mask")
    fails([*base, "--edit", str(mask_file)], capsys, "is an FIA mask, not a ScaPre edit")
    fails([*base, "--mask", str(mask_file), "--strength", "1.5"], capsys, "strength must be between 0 and 1")
    fails([*base, "--edit", str(edit_file), "--strength", "-1"], capsys, "scale must be between 0 and 10")
    fails([*base, "--mask", str(tmp_path / "missing.safetensors")], capsys, "not found")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(mask_file.read_bytes()[:-20])
    fails([*base, "--mask", str(broken)], capsys, "not a readable safetensors file")
    only_files(tmp_path, {"broken.safetensors"})
