"""ScaPre from the command line and the diffusers runner, on the tiny random pipeline."""

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fia_engine.cli import main
from fia_engine.diffusers_files import unet_state_dict
from fia_engine.layers import shape_fingerprint
from fia_engine.masks import FIAMask
from fia_engine.scapre import ScaPreEdit
from fia_engine.scapre.layers import projection_to_diffusers


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def fails(args: list[str], capsys, message: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err


def test_scapre_writes_an_edit(edit_file):
    edit = ScaPreEdit.load(edit_file)
    assert edit.metadata["concepts"] == ["golf ball", "church"] and edit.metadata["preserve"] == ["dog", "cat"]
    assert edit.metadata["anchor"] == "" and edit.metadata["settings"]["mode"] == "scapre"
    # golf, ball, EOS + church, EOS with the tiny word-level tokenizer
    assert edit.metadata["token_rows"] == {"concept": 5, "preserve": 4, "empty": 5}
    assert len(edit.layers) == 8 and edit.stored_bytes < edit.dense_bytes


def test_apply_edits_only_the_projections_and_leaves_the_source(tiny_pipeline, edit_file, tmp_path):
    before = folder_digest(tiny_pipeline)
    out = tmp_path / "erased"
    assert main(["apply", "--pipeline", str(tiny_pipeline), "--mask", str(edit_file), "--out", str(out)]) == 0
    assert folder_digest(tiny_pipeline) == before
    edit = ScaPreEdit.load(edit_file)
    edited_keys = {projection_to_diffusers(name) + ".weight": name for name in edit.layers}
    original, edited = unet_state_dict(tiny_pipeline), unet_state_dict(out)
    assert original.keys() == edited.keys() and len(edited_keys) == 8
    for key, weight in original.items():
        if key in edited_keys:
            assert not torch.equal(weight, edited[key]), key
            torch.testing.assert_close(edited[key], weight + edit.delta(edited_keys[key]))
        else:
            assert torch.equal(weight, edited[key]), key
    assert folder_digest(out / "text_encoder") == folder_digest(tiny_pipeline / "text_encoder")


def test_apply_with_a_scale(tiny_pipeline, edit_file, tmp_path):
    out = tmp_path / "half"
    assert (
        main(["apply", "--pipeline", str(tiny_pipeline), "--mask", str(edit_file), "--out", str(out), "--scale", "0.5"])
        == 0
    )
    name = "mid.0.0.0.to_v"
    key = projection_to_diffusers(name) + ".weight"
    original = load_file(str(next((tiny_pipeline / "unet").glob("*.safetensors"))))[key]
    edited = load_file(str(next((out / "unet").glob("*.safetensors"))))[key]
    torch.testing.assert_close(edited, original + 0.5 * ScaPreEdit.load(edit_file).delta(name))


def test_info_prints_the_edit(edit_file, capsys):
    assert main(["info", str(edit_file)]) == 0
    text = capsys.readouterr().out
    assert "ScaPre edit" in text and "golf ball, church" in text and "down.0.0.0.to_k" in text


def test_uce_mode_and_switches_from_the_command_line(tiny_pipeline, tmp_path):
    out = tmp_path / "uce.safetensors"
    args = ["scapre", "--pipeline", str(tiny_pipeline), "--concepts", "dog", "--mode", "uce", "--ridge", "0.5"]
    assert main([*args, "--anchor", "cat", "--out", str(out), "--device", "cpu"]) == 0
    edit = ScaPreEdit.load(out)
    assert edit.metadata["settings"]["ridge"] == 0.5 and not any(edit.metadata["active"].values())
    assert edit.metadata["anchor"] == "cat" and all(d.rank <= 2 for d in edit.layers.values())


def test_switches_turn_on_and_off_from_the_command_line(tiny_pipeline, tmp_path):
    out = tmp_path / "switched.safetensors"
    args = ["scapre", "--pipeline", str(tiny_pipeline), "--concepts", "dog", "--out", str(out), "--device", "cpu"]
    switches = ["--spectral", "--bures", "--bures-form", "release", "--no-row-mask", "--no-entropy-blend"]
    switches += ["--blend-floor", "0.5", "--spectral-form", "release", "--spectral-scale", "2"]
    assert main([*args, *switches]) == 0
    metadata = ScaPreEdit.load(out).metadata
    assert metadata["active"] == {
        "spectral": True,
        "row_mask": False,
        "bures": True,
        "entropy_blend": False,
        "sylvester": False,
    }
    assert metadata["settings"]["blend_floor"] == 0.5 and metadata["settings"]["bures_form"] == "release"
    assert metadata["settings"]["spectral_form"] == "release" and metadata["settings"]["spectral_scale"] == 2.0


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--concepts", " , "], "concept list is empty"),
        (["--concepts", "dog", "--mask-power", "0"], "mask_power must be a finite number > 0"),
        (["--concepts", "dog", "--ridge", "-1"], "ridge must be a finite number >= 0"),
        (["--concepts", "dog", "--preserve", "dog"], "both to erase and to preserve"),
        (["--concepts", "dog", "--anchor", "dog"], "anchor 'dog' is one of the concepts"),
    ],
)
def test_bad_scapre_input_exits_2(tiny_pipeline, tmp_path, capsys, extra, message):
    out = tmp_path / "e.safetensors"
    fails(["scapre", "--pipeline", str(tiny_pipeline), *extra, "--out", str(out)], capsys, message)
    assert not out.exists()


def test_corrupt_edit_file(tiny_pipeline, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01 this is not an edit")
    out = tmp_path / "out"
    fails(["apply", "--pipeline", str(tiny_pipeline), "--mask", str(bad), "--out", str(out)], capsys, "not a readable")
    assert not out.exists()


def test_edit_for_another_architecture(edit_file, tmp_path, capsys):
    from fia_engine.testing import make_tiny_pipeline, tiny_unet

    other = make_tiny_pipeline(tmp_path / "wide")
    shutil.rmtree(other / "unet")
    tiny_unet(cross_attention_dim=32, layers_per_block=2).save_pretrained(other / "unet")  # more layers
    out = tmp_path / "out"
    fails(
        ["apply", "--pipeline", str(other), "--mask", str(edit_file), "--out", str(out)],
        capsys,
        "ScaPre edit was made for a UNet(context=32) model with other cross-attention layers",
    )
    assert not out.exists() and not list(tmp_path.glob(".out-*"))


def test_wrong_strength_flag_for_the_file_kind(tiny_pipeline, edit_file, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["apply", "--pipeline", str(tiny_pipeline), "--mask", str(edit_file), "--out", str(out)]
    fails([*args, "--strength", "0.5"], capsys, "a ScaPre edit takes --scale")
    fails([*args, "--scale", "11"], capsys, "scale must be between 0 and 10")
    assert not out.exists()


def test_apply_tells_fia_masks_from_scapre_edits(tiny_pipeline, tmp_path, capsys):
    from fia_engine import find_target_layers
    from fia_engine.testing import tiny_unet

    targets = find_target_layers(tiny_unet())
    indices = {layer.canonical: torch.tensor([0]) for layer in targets}
    mask = FIAMask(indices, targets.shapes, targets.family, shape_fingerprint(targets.shapes))
    path = mask.save(tmp_path / "mask.safetensors")
    args = ["apply", "--pipeline", str(tiny_pipeline), "--mask", str(path), "--out", str(tmp_path / "out")]
    fails([*args, "--scale", "0.5"], capsys, "an FIA mask takes --strength")
    assert main(args) == 0 and "weights pruned" in capsys.readouterr().out
