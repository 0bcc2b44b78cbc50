"""`export-lora`: a ScaPre edit as a standard LoRA file, exact up to float rounding.

The key names and scales are checked against the loaders themselves where they are here:
diffusers' load_lora_weights (needs peft; skipped without it) for both spellings. ComfyUI's
LoraLoaderModelOnly is checked in tests/integration/test_edit_files.py.
"""

import copy
import json

import pytest
import torch
from cli_expectations import fails, only_files
from diffusers import UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import load_file

from fia_engine.cli import main
from fia_engine.scapre import LayerDelta, ScaPreEdit, find_cross_attention_projections
from fia_engine.scapre.layers import projection_to_diffusers
from fia_engine.scapre.lora import export_lora
from fia_engine.testing import lora_loader


@pytest.fixture(scope="module")
def mixed_edit(edit_file) -> ScaPreEdit:
    """The edit with one dense layer, one of lower rank and one unchanged (rank 0): every case the export meets."""
    edit = ScaPreEdit.load(edit_file)
    dense, lower, empty = "down.0.0.0.to_k", "up.1.0.0.to_v", "mid.0.0.0.to_k"
    edit.layers[dense] = LayerDelta.full(edit.delta(dense))
    edit.layers[lower] = LayerDelta.low_rank(edit.layers[lower].up[:, :2], edit.layers[lower].down[:2])
    edit.layers[empty] = LayerDelta.low_rank(torch.zeros(edit.shapes[empty][0], 0), torch.zeros(0, 32))
    return edit


def kohya_name(canonical: str) -> str:
    return "lora_unet_" + projection_to_diffusers(canonical).replace(".", "_")


def test_comfy_lora_is_the_edit_with_alpha_equal_to_rank(edit_file, tmp_path):
    out = tmp_path / "lora.safetensors"
    assert main(["export-lora", "--edit", str(edit_file), "--out", str(out)]) == 0
    edit, tensors = ScaPreEdit.load(edit_file), load_file(str(out))
    assert len(tensors) == 3 * len(edit.layers) == 24
    for name in edit.layers:
        key = kohya_name(name)
        up, down, alpha = (tensors[f"{key}.{part}"] for part in ("lora_up.weight", "lora_down.weight", "alpha"))
        assert up.dtype == down.dtype == torch.float32 and alpha.dim() == 0
        assert float(alpha) == down.shape[0] == edit.layers[name].rank
        assert torch.equal(float(alpha) / down.shape[0] * (up @ down), edit.delta(name)), name
    with safe_open(str(out), framework="pt") as handle:
        meta = handle.metadata()
    record = json.loads(meta["fia_lora"])
    assert record["edit"]["concepts"] == ["golf ball", "church"] and record["edit"]["preserve"] == ["dog", "cat"]
    assert record["lora_format"] == "comfy" and record["fingerprint"] == edit.fingerprint
    assert "lora_adapter_metadata" not in meta


def test_dense_lower_rank_and_unchanged_layers(mixed_edit, tmp_path):
    for format in ("comfy", "diffusers"):
        written = export_lora(mixed_edit, tmp_path / f"{format}.safetensors", format)
        tensors = load_file(str(written["path"]))
        assert "mid.0.0.0.to_k" not in written["ranks"] and written["ranks"]["up.1.0.0.to_v"] == 2
        assert written["ranks"]["down.0.0.0.to_k"] == 32  # min(out, in) of a 32 x 32 projection
        for name, rank in written["ranks"].items():
            module = projection_to_diffusers(name)
            if format == "comfy":
                up, down = (
                    tensors[f"{kohya_name(name)}.lora_up.weight"],
                    tensors[f"{kohya_name(name)}.lora_down.weight"],
                )
            else:
                up, down = tensors[f"unet.{module}.lora_B.weight"], tensors[f"unet.{module}.lora_A.weight"]
            assert up.shape[1] == down.shape[0] == rank
            assert torch.equal(up @ down, mixed_edit.delta(name)), (format, name)  # identity factors are exact
        assert not any(projection_to_diffusers("mid.0.0.0.to_k") in key for key in tensors)
    with safe_open(str(tmp_path / "diffusers.safetensors"), framework="pt") as handle:
        config = json.loads(handle.metadata()["lora_adapter_metadata"])
    assert config["unet.r"] == config["unet.lora_alpha"] == 5
    assert config["unet.rank_pattern"] == config["unet.alpha_pattern"]
    assert config["unet.rank_pattern"][projection_to_diffusers("up.1.0.0.to_v")] == 2
    assert len(config["unet.target_modules"]) == 7


def edited_reference(unet, edit: ScaPreEdit):
    reference = copy.deepcopy(unet)
    for target in find_cross_attention_projections(reference):
        target.module.weight.data = edit.edited_weight(target.canonical, target.module.weight)
    return reference


@pytest.mark.parametrize("format,edit", [("diffusers", "mixed"), ("comfy", "as solved")])
def test_diffusers_load_lora_weights_gives_the_edited_unet(
    tiny_pipeline, edit_file, mixed_edit, tmp_path, format, edit
):
    """The diffusers spelling carries any mix of ranks. The kohya one is read by diffusers for one rank
    everywhere (what ScaPre gives without the Bures step); for mixed ranks diffusers 0.42 drops the
    per-layer alphas (its alpha_pattern keys match no module), so the README sends diffusers users
    to --format diffusers."""
    pytest.importorskip("peft", reason="diffusers loads LoRAs through peft (pip install peft)")
    edit = mixed_edit if edit == "mixed" else ScaPreEdit.load(edit_file)
    path = export_lora(edit, tmp_path / "lora.safetensors", format)["path"]
    unet = UNet2DConditionModel.from_pretrained(str(tiny_pipeline / "unet")).eval()
    reference = edited_reference(unet, edit)
    lora_loader(unet).load_lora_weights(str(path))
    sample, context = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0)), torch.randn(2, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(unet(sample, 10, context).sample, reference(sample, 10, context).sample)
    unet.fuse_lora()
    unet.unload_lora()
    fused, expected = unet.state_dict(), reference.state_dict()
    assert fused.keys() == expected.keys()
    for key, weight in expected.items():
        torch.testing.assert_close(fused[key], weight, rtol=0, atol=1e-6, msg=key)


def test_refusals(edit_file, tiny_pipeline, tmp_path, capsys):
    out = tmp_path / "lora.safetensors"
    out.write_bytes(b"keep me")
    fails(["export-lora", "--edit", str(edit_file), "--out", str(out)], capsys, "already exists; pass --overwrite")
    assert out.read_bytes() == b"keep me"
    assert main(["export-lora", "--edit", str(edit_file), "--out", str(out), "--overwrite"]) == 0
    mask = tmp_path / "mask.safetensors"
    args = ["unlearn", "--pipeline", str(tiny_pipeline), "--concepts", "church", "--out", str(mask)]
    assert main([*args, "--pairs", "2", "--steps", "4", "--saliency-steps", "1"]) == 0
    other = tmp_path / "other.safetensors"
    fails(["export-lora", "--edit", str(mask), "--out", str(other)], capsys, "is an FIA mask, not a ScaPre edit")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(edit_file.read_bytes()[:-50])
    fails(["export-lora", "--edit", str(corrupt), "--out", str(other)], capsys, "not a readable safetensors file")
    only_files(tmp_path, {"lora.safetensors", "mask.safetensors", "corrupt.safetensors"})


def test_an_edit_that_changes_nothing_is_refused(edit_file, tmp_path, capsys):
    edit = ScaPreEdit.load(edit_file)
    for name, (rows, cols) in edit.shapes.items():
        edit.layers[name] = LayerDelta.low_rank(torch.zeros(rows, 0), torch.zeros(0, cols))
    empty = tmp_path / "empty.safetensors"
    edit.save(empty)
    fails(["export-lora", "--edit", str(empty), "--out", str(tmp_path / "l.safetensors")], capsys, "changes no weight")
    only_files(tmp_path, {"empty.safetensors"})
