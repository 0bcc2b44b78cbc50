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


def test_a_budget_keeps_the_most_closed_gates_and_hard_gates_are_that_mask():
    from bench.digits.mask_oracle import _Gates

    torch.manual_seed(0)
    layers = {"a": torch.nn.Linear(8, 4), "b": torch.nn.Linear(16, 4)}
    gates = _Gates(layers, init_logit=4.0)
    with torch.no_grad():
        for x in gates.logits.values():
            x.copy_(torch.randn_like(x) * 3)
    closed_everywhere = sum(int(c.sum()) for c in gates.pruned().values())
    budget = 0.1
    chosen = gates.pruned(budget)
    assert sum(int(c.sum()) for c in chosen.values()) == int(budget * 96) < closed_everywhere
    # the chosen ones are the lowest logits, and only closed gates are chosen
    lowest = torch.cat([x.detach().flatten() for x in gates.logits.values()]).sort().values[: int(budget * 96)]
    picked = torch.cat([gates.logits[n].detach()[chosen[n]] for n in layers]).sort().values
    assert torch.equal(lowest, picked) and (picked < 0).all()
    # hard gates: the forward multiplies by exactly that binary mask, gradients still flow to the logits
    gates.harden(budget)
    x = torch.randn(3, 8)
    with gates:
        out = layers["a"](x)
    expected = torch.nn.functional.linear(x, layers["a"].weight * (~chosen["a"]).float(), layers["a"].bias)
    assert torch.allclose(out, expected, atol=1e-6)
    out.sum().backward()
    assert gates.logits["a"].grad is not None and gates.logits["a"].grad.abs().sum() > 0


def test_the_kept_objective_shows_kept_digits_under_forgotten_prompts():
    from bench.digits.mask_oracle import _Batches

    _, asked, wanted = _Batches(0).draw_forget([0, 1], [7, 8], 40, "kept")
    assert all(("zero" in a or "one" in a) for a in asked)
    assert all(("seven" in w or "eight" in w) for w in wanted)
    _, asked, wanted = _Batches(0).draw_forget([0, 1], [7, 8], 10, "base")
    assert all("handwritten digit" in w for w in wanted)
    with pytest.raises(ValueError, match="unknown objective"):
        _Batches(0).draw_forget([0], [1], 2, "other")
