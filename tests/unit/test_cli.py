"""The command line end to end on a tiny random pipeline, and its answers to bad input."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fia_engine.cli import main
from fia_engine.diffusers_files import unet_state_dict
from fia_engine.layers import canonical_to_diffusers
from fia_engine.masks import FIAMask

FAST = ["--pairs", "3", "--steps", "10", "--saliency-steps", "3", "--r2", "0.05"]


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def mask_file(tiny_pipeline, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("masks") / "two.safetensors"
    assert (
        main(["unlearn", "--pipeline", str(tiny_pipeline), "--concepts", "golf ball, church", "--out", str(out), *FAST])
        == 0
    )
    return out


def test_unlearn_writes_a_mask(mask_file):
    mask = FIAMask.load(mask_file)
    assert mask.metadata["concepts"] == ["golf ball", "church"]
    assert 0 < mask.pruned_count < mask.total_count


def test_same_seed_same_mask(tiny_pipeline, mask_file, tmp_path):
    again = tmp_path / "again.safetensors"
    main(["unlearn", "--pipeline", str(tiny_pipeline), "--concepts", "golf ball, church", "--out", str(again), *FAST])
    first, second = FIAMask.load(mask_file), FIAMask.load(again)
    assert all(torch.equal(first.indices[k], second.indices[k]) for k in first.indices)


def test_apply_zeroes_exactly_the_mask_and_leaves_the_source(tiny_pipeline, mask_file, tmp_path):
    before = folder_digest(tiny_pipeline)
    out = tmp_path / "unlearned"
    assert main(["apply", "--pipeline", str(tiny_pipeline), "--mask", str(mask_file), "--out", str(out)]) == 0
    assert folder_digest(tiny_pipeline) == before
    mask = FIAMask.load(mask_file)
    original, edited = unet_state_dict(tiny_pipeline), unet_state_dict(out)
    assert original.keys() == edited.keys()
    pruned_keys = {canonical_to_diffusers(name) + ".weight": name for name in mask.indices}
    for key, weight in original.items():
        if key not in pruned_keys:
            assert torch.equal(weight, edited[key]), key
            continue
        idx = mask.indices[pruned_keys[key]]
        keep = torch.ones(weight.numel(), dtype=torch.bool)
        keep[idx] = False
        assert torch.all(edited[key].view(-1)[idx] == 0)
        assert torch.equal(edited[key].view(-1)[keep], weight.view(-1)[keep])
    # other components are copied byte for byte
    assert folder_digest(out / "text_encoder") == folder_digest(tiny_pipeline / "text_encoder")


def test_apply_with_half_strength(tiny_pipeline, mask_file, tmp_path):
    out = tmp_path / "half"
    main(["apply", "--pipeline", str(tiny_pipeline), "--mask", str(mask_file), "--out", str(out), "--strength", "0.5"])
    mask = FIAMask.load(mask_file)
    name = max(mask.indices, key=lambda n: mask.indices[n].numel())
    key = canonical_to_diffusers(name) + ".weight"
    original = load_file(str(next((tiny_pipeline / "unet").glob("*.safetensors"))))[key].view(-1)
    edited = load_file(str(next((out / "unet").glob("*.safetensors"))))[key].view(-1)
    torch.testing.assert_close(edited[mask.indices[name]], 0.5 * original[mask.indices[name]])


def test_info_prints_metadata_and_layers(mask_file, capsys):
    assert main(["info", str(mask_file)]) == 0
    text = capsys.readouterr().out
    assert "golf ball, church" in text and "down.0.0.0" in text and "agnostic kept" in text


def test_cli_runs_as_a_module(mask_file):
    done = subprocess.run([sys.executable, "-m", "fia_engine", "info", str(mask_file)], capture_output=True, text=True)
    assert done.returncode == 0 and "FIA mask" in done.stdout


# --- bad input -----------------------------------------------------------------------------


def fails(args: list[str], capsys, message: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err


@pytest.mark.parametrize("concepts", ["", " ,  , ", "\n"])
def test_empty_concepts(tiny_pipeline, tmp_path, capsys, concepts):
    out = tmp_path / "m.safetensors"
    fails(
        ["unlearn", "--pipeline", str(tiny_pipeline), "--concepts", concepts, "--out", str(out), *FAST],
        capsys,
        "concept list is empty",
    )
    assert not out.exists()


@pytest.mark.parametrize("flag,value", [("--r1", "0"), ("--r2", "1.5"), ("--alpha", "-0.1"), ("--r2", "abc")])
def test_ratios_out_of_range(tiny_pipeline, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "unlearn",
                "--pipeline",
                str(tiny_pipeline),
                "--concepts",
                "dog",
                "--out",
                str(tmp_path / "m"),
                flag,
                value,
            ]
        )
    assert exit_info.value.code == 2
    assert flag.lstrip("-") in capsys.readouterr().err


def test_missing_folder(tmp_path, capsys):
    fails(
        ["unlearn", "--pipeline", str(tmp_path / "nope"), "--concepts", "dog", "--out", str(tmp_path / "m")],
        capsys,
        "pipeline folder not found",
    )


def test_strength_out_of_range(tiny_pipeline, mask_file, tmp_path, capsys):
    fails(
        [
            "apply",
            "--pipeline",
            str(tiny_pipeline),
            "--mask",
            str(mask_file),
            "--out",
            str(tmp_path / "x"),
            "--strength",
            "1.5",
        ],
        capsys,
        "strength must be between 0 and 1",
    )
    assert not (tmp_path / "x").exists()


def test_corrupt_mask(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01 this is not a mask")
    fails(["info", str(bad)], capsys, "not a readable safetensors file")


def test_foreign_safetensors_file(tiny_pipeline, capsys):
    weights = next((tiny_pipeline / "unet").glob("*.safetensors"))
    fails(["info", str(weights)], capsys, "is not an FIA mask")


def test_tampered_indices(mask_file, tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(mask_file), framework="pt") as handle:
        header = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    key = next(iter(tensors))
    tensors[key] = torch.tensor([10**7], dtype=torch.int32)
    bad = tmp_path / "tampered.safetensors"
    save_file(tensors, str(bad), metadata=header)
    fails(["info", str(bad)], capsys, "out of range")


def test_mask_for_another_architecture(mask_file, tmp_path, capsys):
    from fia_engine.testing import make_tiny_pipeline, tiny_unet

    other = make_tiny_pipeline(tmp_path / "wide")
    tiny_unet(cross_attention_dim=32, layers_per_block=2).save_pretrained(other / "unet")  # more layers
    out = tmp_path / "out"
    fails(
        ["apply", "--pipeline", str(other), "--mask", str(mask_file), "--out", str(out)],
        capsys,
        "made for a UNet(context=32) model with other target layers",
    )
    assert not out.exists() and not list(tmp_path.glob(".out-*"))


def test_mask_for_another_checkpoint_warns_and_applies(other_pipeline, mask_file, tmp_path, caplog):
    out = tmp_path / "moved"
    assert main(["apply", "--pipeline", str(other_pipeline), "--mask", str(mask_file), "--out", str(out)]) == 0
    assert "another checkpoint" in caplog.text


def test_mask_for_another_family_with_the_same_shapes(tiny_pipeline, mask_file, tmp_path, capsys):
    """SD 1.x and SD 2.x share FFN2 shapes; the family (context width) tells them apart."""
    import json
    import shutil

    other = tmp_path / "ctx1024"
    shutil.copytree(tiny_pipeline, other)
    config = json.loads((other / "unet" / "config.json").read_text())
    config["cross_attention_dim"] = 1024
    (other / "unet" / "config.json").write_text(json.dumps(config))
    fails(
        ["apply", "--pipeline", str(other), "--mask", str(mask_file), "--out", str(tmp_path / "o")],
        capsys,
        "made for a UNet(context=32) model, but the model is SD2.x",
    )
