"""`bake --fill decoys`: pruned weights get values drawn from their own row, so the file shows no zeros."""

import json

import pytest
import torch
from cli_expectations import fails, only_files
from diffusers import UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import load_file
from test_bake import FAST, ldm_key, raw_tensors

from fia_engine.cli import main
from fia_engine.decoys import decoy_weight, layer_generator
from fia_engine.layers import canonical_to_diffusers
from fia_engine.masks import FIAMask
from fia_engine.testing import tiny_ldm_checkpoint


def test_decoys_by_hand_on_a_2x4_layer():
    weight = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    before = weight.clone()
    # row 0 loses columns 1 and 3 (decoys come from its kept 1 and 3); row 1 loses everything
    # (decoys come from the layer's kept entries: 1 and 3 again)
    indices = torch.tensor([1, 3, 4, 5, 6, 7], dtype=torch.int32)
    out = decoy_weight(weight, indices, layer_generator(0, "layer"))
    assert torch.equal(weight, before), "the input was changed"
    assert out[0, 0] == 1.0 and out[0, 2] == 3.0
    assert set(out.view(-1)[indices.long()].tolist()) <= {1.0, 3.0}
    assert torch.equal(out, decoy_weight(weight, indices, layer_generator(0, "layer")))  # seeded
    # over many rows, each kept value of the row is drawn (uniformly: no weight is favoured)
    wide = torch.arange(1.0, 5.0).repeat(2000, 1)
    draws = decoy_weight(wide, torch.arange(3, 8000, 4, dtype=torch.int32), layer_generator(1, "x"))[:, 3]
    counts = torch.bincount(draws.long(), minlength=4)[1:4]
    assert counts.sum() == 2000 and counts.min() > 600, counts
    # nothing pruned: an unchanged copy; everything pruned: zeros (nothing to draw from)
    assert torch.equal(decoy_weight(weight, torch.tensor([], dtype=torch.int32), layer_generator(0, "l")), weight)
    assert not decoy_weight(weight, torch.arange(8, dtype=torch.int32), layer_generator(0, "l")).any()


@pytest.fixture(scope="module")
def unet(tiny_pipeline):
    return UNet2DConditionModel.from_pretrained(str(tiny_pipeline / "unet")).eval()


@pytest.fixture(scope="module")
def checkpoint(unet, tmp_path_factory):
    return tiny_ldm_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", unet, torch.float16)


@pytest.fixture(scope="module")
def mask_file(tiny_pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp("masks") / "mask.safetensors"
    args = ["unlearn", "--pipeline", str(tiny_pipeline), "--concepts", "golf ball, church", "--out", str(out)]
    assert main([*args, *FAST]) == 0
    return out


def bake(checkpoint, mask_file, out, *extra) -> dict:
    assert main(["bake", "--checkpoint", str(checkpoint), "--mask", str(mask_file), "--out", str(out), *extra]) == 0
    return load_file(str(out))


def test_bake_with_decoys_leaves_no_zeros_and_draws_from_each_row(unet, checkpoint, mask_file, tmp_path):
    mask = FIAMask.load(mask_file)
    original = load_file(str(checkpoint))
    baked = bake(checkpoint, mask_file, tmp_path / "decoys.safetensors", "--fill", "decoys", "--fill-seed", "7")
    raw_in, raw_out = raw_tensors(checkpoint), raw_tensors(tmp_path / "decoys.safetensors")
    pruned = {ldm_key(unet, canonical_to_diffusers(name) + ".weight"): name for name in mask.indices}
    assert len(pruned) == 4
    for key in original:
        if key not in pruned:
            assert raw_in[key] == raw_out[key], f"{key} is not byte-identical"
            continue
        before, after = original[key], baked[key]
        index = mask.indices[pruned[key]]
        flat_before, flat_after = before.view(-1), after.view(-1)
        keep = torch.ones_like(flat_before, dtype=torch.bool)
        keep[index] = False
        assert torch.equal(flat_after[keep], flat_before[keep]), key
        # no more zeros than the checkpoint had by itself, and every decoy is a kept value of its row
        assert int((after == 0).sum()) == int((before.view(-1)[keep] == 0).sum()), key
        cols = before.shape[1]
        for flat in index.tolist()[:200]:
            row = flat // cols
            kept_row = before[row][keep.view(before.shape)[row]]
            assert bool((kept_row == flat_after[flat]).any()), (key, flat)
        # decoys are not the pruned weights themselves (they would undo the mask)
        assert float((flat_after[index] == flat_before[index]).float().mean()) < 0.2
    with safe_open(str(tmp_path / "decoys.safetensors"), framework="pt") as handle:
        (record,) = json.loads(handle.metadata()["fia_bake"])
    assert record["fill"] == "decoys" and "fill_note" in record
    # the draw's seed is not stored (it would let anyone replay the draws and find the entries)
    assert set(record) == {
        "kind",
        "strength",
        "fill",
        "fill_note",
        "pruned",
        "of",
        "made_for",
        "mask",
        "tool",
        "source",
    }
    # the same seed gives the same file, another seed other decoys
    again = bake(checkpoint, mask_file, tmp_path / "again.safetensors", "--fill", "decoys", "--fill-seed", "7")
    other = bake(checkpoint, mask_file, tmp_path / "other.safetensors", "--fill", "decoys", "--fill-seed", "8")
    assert all(torch.equal(again[k], baked[k]) for k in baked)
    assert any(not torch.equal(other[k], baked[k]) for k in pruned)
    zeros = bake(checkpoint, mask_file, tmp_path / "zeros.safetensors")
    with safe_open(str(tmp_path / "zeros.safetensors"), framework="pt") as handle:
        assert json.loads(handle.metadata()["fia_bake"])[0]["fill"] == "zeros"
    assert all(bool((zeros[k].view(-1)[mask.indices[n]] == 0).all()) for k, n in pruned.items())


def test_decoys_refuse_half_strength_and_edits(checkpoint, mask_file, edit_file, tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    base = ["bake", "--checkpoint", str(checkpoint), "--out", str(out)]
    fails([*base, "--mask", str(mask_file), "--fill", "decoys", "--strength", "0.5"], capsys, "needs strength 1")
    fails([*base, "--edit", str(edit_file), "--fill", "decoys"], capsys, "--fill and --fill-seed are for masks")
    only_files(tmp_path, set())
