"""The learned-mask oracle: it must learn, prune what it learned, and leave the bench's model alone."""

import pytest
import torch

from bench.digits import MODEL_DIR
from bench.digits.benchmark import P1_FORGET
from bench.digits.mask_oracle import OracleSettings, learn_mask, masked_linears, objective_left
from bench.digits.unlearning import DigitsBench

QUICK = OracleSettings(steps=40, batch=8, lr=0.2)  # a larger step: gates cross 1/2 within 40 steps


@pytest.fixture(scope="module")
def bench():
    return DigitsBench(MODEL_DIR, images_per_digit=4, seeds=(0,), sample_steps=4)


def test_the_layer_sets_are_fias_layers_and_the_value_projections(bench):
    unet = bench.sampling.unet
    assert len(masked_linears(unet, "ffn2")) == 14
    values = masked_linears(unet, "to_v")
    assert len(values) == 14 and all(name.endswith(".to_v") for name in values)  # one per transformer block
    with pytest.raises(ValueError, match="unknown layer set"):
        masked_linears(unet, "to_q")


def test_a_short_run_on_the_value_projections_moves_the_forget_prompts(bench):
    before = {k: v.clone() for k, v in bench.sampling.unet.state_dict().items()}
    unet, fraction, left = learn_mask(bench, P1_FORGET, "to_v", QUICK)
    # the bench's own UNet is untouched, hooks included: same weights, same outputs as a fresh copy
    after = bench.sampling.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_hooks for m in bench.sampling.unet.modules())
    # what was pruned is exactly what is zero in the copy, and only in the masked layers
    zeros = sum(int((m.weight == 0).sum()) for m in masked_linears(unet, "to_v").values())
    total = sum(m.weight.numel() for m in masked_linears(unet, "to_v").values())
    assert 0 < fraction < 0.5 and zeros == round(fraction * total)
    assert all(torch.equal(m.weight, before[f"{n}.weight"]) for n, m in unet.named_modules() if n.endswith("ff.net.2"))
    # even 40 short steps take a clear share of the forget error away (a mask that learned nothing gives ~1)
    assert left < 0.5, left  # measured 0.26
    assert objective_left(bench, bench.sampling.unet, P1_FORGET, QUICK) == pytest.approx(1.0)
