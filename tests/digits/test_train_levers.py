"""The training levers of the FFN model: a weak, frozen text path and an FFN sparsity penalty."""

import json

import pytest
import torch

from bench.digits import MODEL_DIR
from bench.digits.__main__ import main
from bench.digits.sampling import load_components
from bench.digits.train import TrainConfig, _FfnActivations, _weaken_cross_attention, train
from fia_engine.float_mode import flushing_subnormals


def _cross_attention(unet):
    return {name: module for name, module in unet.named_modules() if name.endswith("attn2")}


def test_weakening_scales_and_freezes_only_the_text_write():
    unet = load_components(MODEL_DIR).unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    _weaken_cross_attention(unet, 0.05)
    blocks = _cross_attention(unet)
    assert len(blocks) == 14
    for name, attn in blocks.items():
        assert torch.allclose(attn.to_out[0].weight, 0.05 * before[f"{name}.to_out.0.weight"])
        assert not attn.to_v.weight.requires_grad and not attn.to_out[0].weight.requires_grad
        assert attn.to_k.weight.requires_grad and attn.to_q.weight.requires_grad
    changed = {k for k, v in unet.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {f"{n}.to_out.0.{p}" for n in blocks for p in ("weight", "bias")}


def test_density_is_one_for_flat_and_one_over_root_width_for_one_unit():
    layer = torch.nn.Linear(16, 4)
    wrapper = torch.nn.Module()
    wrapper.add_module("ff", torch.nn.Module())
    wrapper.ff.add_module("net", torch.nn.ModuleList([torch.nn.Identity(), torch.nn.Identity(), layer]))
    recorder = _FfnActivations(wrapper)
    assert len(recorder.handles) == 1
    layer(torch.ones(3, 16))
    assert recorder.take().item() == pytest.approx(1.0)
    layer(-5.0 * torch.eye(16)[:1])  # one active unit, of either sign
    assert recorder.take().item() == pytest.approx(0.25)
    assert recorder.values == []


def test_a_weak_text_phase_trains_everything_but_the_frozen_projections(tmp_path):
    out = tmp_path / "phase"
    metadata = train(
        TrainConfig(
            steps=2,
            batch_size=2,
            seed=0,
            log_every=1,
            init_from=str(MODEL_DIR),
            cross_attention_gain=0.05,
            ffn_sparsity=0.01,
        ),
        out,
    )
    assert metadata["config"]["cross_attention_gain"] == 0.05
    assert not flushing_subnormals(), "training must put the process's float mode back"
    assert json.loads((out / "training.json").read_text())["previous_phase"] is not None
    original = load_components(MODEL_DIR).unet.state_dict()
    trained = load_components(out).unet.state_dict()
    for name in _cross_attention(load_components(MODEL_DIR).unet):
        # the folder stores the UNet in float16
        expected = (0.05 * original[f"{name}.to_out.0.weight"]).half().float()
        assert torch.equal(trained[f"{name}.to_out.0.weight"], expected)
        assert torch.equal(trained[f"{name}.to_v.weight"], original[f"{name}.to_v.weight"])
    ffn = "mid_block.attentions.0.transformer_blocks.0.ff.net.2.weight"
    assert not torch.equal(trained[ffn], original[ffn])


@pytest.mark.parametrize(
    "flags", [["--ffn-sparsity", "-1"], ["--cross-attention-gain", "0"], ["--cross-attention-gain", "1.5"]]
)
def test_bad_training_levers_are_one_line_errors(flags, tmp_path, capsys):
    assert main(["train", "--steps", "1", "--out", str(tmp_path / "m"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--cross-attention-gain in (0, 1]" in err
    assert not (tmp_path / "m").exists()


def test_gate_rows_file_may_exist_and_is_not_a_folder(tmp_path, capsys):
    rows = tmp_path / "rows.json"
    rows.write_text("[]")
    # the output check passes (the run then stops at the missing model, a one-line error)
    assert main(["gate", "--model", str(tmp_path / "none"), "--name", "x", "--save", str(rows)]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" not in err and "none" in err
    assert rows.read_text() == "[]"


def test_a_frozen_text_encoder_phase_leaves_the_encoder_as_it_was(tmp_path):
    out = tmp_path / "frozen"
    train(
        TrainConfig(
            steps=2, batch_size=2, seed=0, init_from=str(MODEL_DIR), cross_attention_gain=0.05, freeze_text_encoder=True
        ),
        out,
    )
    before = load_components(MODEL_DIR).text_encoder.state_dict()
    after = load_components(out).text_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
