"""The benchmark's P1 ScaPre edit as a LoRA, loaded by diffusers' load_lora_weights, at reduced size.

The LoRA must give the model that applying the edit file gives (bench.digits.edits, what
`generate --mask` uses): the same weights to float rounding and the same forget / preserve
accuracy. `apply` on the model folder writes the same weights rounded to the folder's
float16 (bench/RESULTS.md section 12 samples all four ways).
"""

import copy

import pytest
import torch
from diffusers import UNet2DConditionModel

from bench.digits import MODEL_DIR
from bench.digits.benchmark import P1_FORGET
from bench.digits.edits import edited_unet
from bench.digits.methods import SCAPRE, scapre_group
from bench.digits.unlearning import DigitsBench, Row, mean_std
from fia_engine.cli import main
from fia_engine.testing import lora_loader

IMAGES_PER_DIGIT = 10


def accuracies(bench: DigitsBench, unet) -> tuple[float, float]:
    row = Row("", list(P1_FORGET), bench.accuracy(unet), 0.0, 0.0)
    return mean_std(row.forget_acc())[0], mean_std(row.preserve_acc())[0]


def test_lora_via_load_lora_weights_matches_apply(tmp_path):
    pytest.importorskip("peft", reason="diffusers loads LoRAs through peft (pip install peft)")
    bench = DigitsBench(MODEL_DIR, images_per_digit=IMAGES_PER_DIGIT, seeds=(0,))
    edit_path = scapre_group(("scapre",))(bench, P1_FORGET)[SCAPRE].made.save(tmp_path / "p1.safetensors")
    applied = edited_unet(bench.engine.unet, edit_path)
    lora = tmp_path / "p1-lora.safetensors"
    assert main(["export-lora", "--edit", str(edit_path), "--out", str(lora), "--format", "diffusers"]) == 0
    with_lora = UNet2DConditionModel.from_pretrained(str(MODEL_DIR / "unet")).eval()
    lora_loader(with_lora).load_lora_weights(str(lora))

    expected = accuracies(bench, applied)
    assert expected[0] <= 0.5 and expected[1] >= 0.7, f"the edit does not erase here: {expected}"
    assert accuracies(bench, with_lora) == expected

    fused = copy.deepcopy(with_lora)
    fused.fuse_lora()
    fused.unload_lora()
    reference, found = applied.state_dict(), fused.state_dict()
    assert found.keys() == reference.keys()
    assert max(float((found[k] - v).abs().max()) for k, v in reference.items()) <= 1e-6

    folder = tmp_path / "applied"
    assert main(["apply", "--pipeline", str(MODEL_DIR), "--mask", str(edit_path), "--out", str(folder)]) == 0
    stored = UNet2DConditionModel.from_pretrained(str(folder / "unet")).state_dict()
    for key, weight in reference.items():  # float16 rounding of the same weights: half an ulp
        assert torch.all((stored[key] - weight).abs() <= weight.abs() * 2**-11 + 2**-25), key
