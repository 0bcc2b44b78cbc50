"""The ScaPre edit as an object and a file: storage, round trip, validation, compatibility."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fia_engine.errors import CorruptMaskError, InvalidInputError, MaskMismatchError
from fia_engine.scapre import LayerDelta, ScaPreEdit, ScaPreSettings, compute_edit


def layer_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "down.0.0.0.to_k": torch.randn(24, 32, generator=g),
        "down.0.0.0.to_v": torch.randn(24, 32, generator=g),
        "mid.0.0.0.to_k": torch.randn(48, 32, generator=g),
        "mid.0.0.0.to_v": torch.randn(48, 32, generator=g),
    }


def tokens(seed: int = 1, concepts: int = 4, preserve: int = 5):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(concepts, 32, generator=g),
        torch.randn(concepts, 32, generator=g),
        torch.randn(preserve, 32, generator=g),
    )


@pytest.fixture(scope="module")
def edit() -> ScaPreEdit:
    concepts, anchors, preserve = tokens()
    return compute_edit(layer_weights(), concepts, anchors, preserve, metadata={"concepts": ["golf ball", "church"]})


def test_uce_edit_is_stored_at_rank_at_most_n():
    concepts, anchors, preserve = tokens()
    uce = compute_edit(layer_weights(), concepts, anchors, preserve, ScaPreSettings(mode="uce"))
    assert all(delta.is_low_rank and delta.rank <= len(concepts) for delta in uce.layers.values())
    assert uce.stored_bytes < uce.dense_bytes
    summary = uce.summary()
    assert summary["stored_bytes"] == uce.stored_bytes and summary["layer_count"] == 4


def test_default_edit_is_low_rank_too(edit):
    assert all(delta.is_low_rank and delta.rank <= 4 for delta in edit.layers.values())
    assert 0 < edit.summary()["edited_fraction"] <= 1


def test_sylvester_edit_is_dense_when_low_rank_would_not_be_smaller():
    concepts, anchors, preserve = tokens()
    dense = compute_edit(layer_weights(), concepts, anchors, preserve, ScaPreSettings(output_reg=1.0))
    assert not any(delta.is_low_rank for delta in dense.layers.values())


def test_compact_finds_the_numerical_rank():
    g = torch.Generator().manual_seed(2)
    product = torch.randn(40, 3, generator=g) @ torch.randn(3, 50, generator=g)
    compact = LayerDelta.full(product).compact(1e-6)
    assert compact.rank == 3
    torch.testing.assert_close(compact.to_dense(), product, rtol=1e-5, atol=1e-5)
    padded = LayerDelta.low_rank(torch.cat([product[:, :3], torch.zeros(40, 5)], 1), torch.randn(8, 50, generator=g))
    assert padded.compact(1e-6).rank == 3
    assert LayerDelta.low_rank(torch.zeros(40, 2), torch.randn(2, 50)).compact(1e-6).rank == 0


def test_save_load_round_trip_is_exact(edit, tmp_path):
    path = edit.save(tmp_path / "edit.safetensors")
    loaded = ScaPreEdit.load(path)
    assert loaded.shapes == edit.shapes and loaded.fingerprint == edit.fingerprint
    assert loaded.weight_signature == edit.weight_signature and loaded.family == edit.family
    assert loaded.metadata["concepts"] == ["golf ball", "church"]
    assert loaded.metadata["settings"] == ScaPreSettings().to_dict()
    for name, delta in edit.layers.items():
        assert all(torch.equal(a, b) for a, b in zip(delta.tensors(), loaded.layers[name].tensors(), strict=True))
    assert not list(tmp_path.glob(".scapre-*"))  # no temporary file left


def test_edited_weight_never_modifies_its_input(edit):
    weights = layer_weights()
    for name, weight in weights.items():
        before = weight.clone()
        edited = edit.edited_weight(name, weight, scale=0.5)
        assert torch.equal(weight, before)
        torch.testing.assert_close(edited, before + 0.5 * edit.delta(name))
    half = weights["mid.0.0.0.to_k"].half()
    assert edit.edited_weight("mid.0.0.0.to_k", half).dtype == torch.float16


def test_compute_edit_leaves_its_inputs_alone():
    weights, (concepts, anchors, preserve) = layer_weights(), tokens()
    copies = [t.clone() for t in [*weights.values(), concepts, anchors, preserve]]
    compute_edit(weights, concepts, anchors, preserve, ScaPreSettings(output_reg=0.5))
    assert all(torch.equal(a, b) for a, b in zip([*weights.values(), concepts, anchors, preserve], copies, strict=True))


def test_bad_scale_and_settings_say_what_to_fix(edit):
    with pytest.raises(InvalidInputError, match="scale must be between 0 and 10"):
        edit.edited_weight("mid.0.0.0.to_k", layer_weights()["mid.0.0.0.to_k"], scale=-1)
    with pytest.raises(InvalidInputError, match="mask_power must be a finite number > 0"):
        ScaPreSettings(mask_power=0).validate()
    with pytest.raises(InvalidInputError, match="mode must be one of"):
        ScaPreSettings(mode="fast").validate()
    with pytest.raises(InvalidInputError, match="blend_floor"):
        ScaPreSettings(blend_floor=float("nan")).validate()
    with pytest.raises(InvalidInputError, match="entropy_bins must be an integer from 2"):
        ScaPreSettings(entropy_bins=1).validate()
    with pytest.raises(InvalidInputError, match="mask_form must be one of"):
        ScaPreSettings(mask_form="rows").validate()
    with pytest.raises(InvalidInputError, match="spectral_form must be one of"):
        ScaPreSettings(spectral_form="svd").validate()
    with pytest.raises(InvalidInputError, match="spectral_scale"):
        ScaPreSettings(spectral_scale=-1.0).validate()
    with pytest.raises(InvalidInputError, match="bures_form must be one of"):
        ScaPreSettings(bures_form="paper").validate()
    with pytest.raises(InvalidInputError, match="bures_iters must be an integer from 1"):
        ScaPreSettings(bures_iters=0).validate()
    with pytest.raises(InvalidInputError, match="mask_temperature"):
        ScaPreSettings(mask_temperature=0.0).validate()
    concepts, anchors, _ = tokens()
    with pytest.raises(InvalidInputError, match="anchor token rows"):
        compute_edit(layer_weights(), concepts, anchors[:2], None)
    with pytest.raises(InvalidInputError, match="no concept token rows"):
        compute_edit(layer_weights(), concepts[:0], anchors[:0], None)
    with pytest.raises(InvalidInputError, match="singular.*ridge"):
        compute_edit(layer_weights(), concepts, anchors, None, ScaPreSettings(ridge=0.0))


def test_corrupt_and_foreign_files_are_refused(edit, tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 not an edit")
    with pytest.raises(CorruptMaskError, match="not a readable safetensors file"):
        ScaPreEdit.load(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign), metadata={"format": "fia-mask"})
    with pytest.raises(CorruptMaskError, match="is not a ScaPre edit"):
        ScaPreEdit.load(foreign)


def tampered(edit: ScaPreEdit, tmp_path, change) -> ScaPreEdit:
    path = edit.save(tmp_path / "good.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        header, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    change(header, tensors)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=header)
    return ScaPreEdit.load(bad)


def test_tampered_files_are_refused(edit, tmp_path):
    def wrong_rank(header, tensors):
        tensors["up.mid.0.0.0.to_k"] = torch.zeros(48, 9)

    def nan(header, tensors):
        tensors["down.mid.0.0.0.to_k"] = tensors["down.mid.0.0.0.to_k"] * float("nan")

    def other_shapes(header, tensors):
        shapes = json.loads(header["shapes"])
        shapes["mid.0.0.0.to_k"] = [64, 32]
        header["shapes"] = json.dumps(shapes)

    def missing_layer(header, tensors):
        del tensors["up.down.0.0.0.to_v"]

    for change, message in [
        (wrong_rank, "factors have ranks"),
        (nan, "non-finite"),
        (other_shapes, "fingerprint does not match"),
        (missing_layer, "needs either up and down, or dense"),
    ]:
        with pytest.raises(CorruptMaskError, match=message):
            tampered(edit, tmp_path, change)


def test_an_edit_for_another_model_is_refused(edit, caplog):
    shapes = dict(edit.shapes)
    assert edit.check_compatible(shapes, edit.weight_signature, edit.family)
    with pytest.raises(MaskMismatchError, match="made for a UNet\\(context=32\\) model, but the model is SD1.x"):
        edit.check_compatible(shapes, None, "SD1.x")
    shapes["mid.0.0.0.to_k"] = (64, 32)
    with pytest.raises(MaskMismatchError, match="other cross-attention layers"):
        edit.check_compatible(shapes)
    other = {name: value * 2 for name, value in edit.weight_signature.items()}
    assert edit.check_compatible(dict(edit.shapes), other) is False
    assert "another checkpoint" in caplog.text
    with pytest.raises(MaskMismatchError, match="weight shape"):
        edit.edited_weight("mid.0.0.0.to_k", torch.zeros(48, 16))
