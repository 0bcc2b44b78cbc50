"""Exact mode's collection against the formula written out directly, within float tolerance.

The collector computes V = |<X_j, Y_i>| ||X_j|| / (||X_j|| ||Y_i|| + eps) as one GEMM on unit
columns of Y (plus the eps factor only where it is not 1 in float32), and folds each step into
the time integral with reused buffers; the reference below takes the formula as written.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fia_engine import GroupPlan, SaliencyCollector
from fia_engine.layers import TargetLayer, UNetTargets
from fia_engine.localize import StepIntegrator

EPS = 1e-8


def reference_v(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """V of one sample, x (tokens, C_in), y (tokens, C_out) -> (C_out, C_in)."""
    x_norm, y_norm = x.norm(dim=0), y.norm(dim=0)
    inner = (y.t() @ x).abs()
    return inner * x_norm.unsqueeze(0) / (y_norm.unsqueeze(1) * x_norm.unsqueeze(0) + EPS)


def reference_integrated(weight, samples, outputs, groups, r1):
    """A of concept 0 (group 0) against base group 1, steps given as lists of samples."""
    integrator = StepIntegrator(r1)
    for step_x, step_y in zip(samples, outputs, strict=True):
        values = [reference_v(x, y) for x, y in zip(step_x, step_y, strict=True)]
        concept = torch.stack([v for v, g in zip(values, groups, strict=True) if g == 0])
        base = torch.stack([v for v, g in zip(values, groups, strict=True) if g == 1])
        spread = base.std(dim=0, unbiased=True) if len(base) > 1 else torch.zeros_like(base[0])
        integrator.add(weight.abs() * (concept.mean(0) - base.mean(0) - spread).clamp(min=0))
    return integrator.result()


@pytest.mark.parametrize("dead_output", [False, True], ids=["ordinary", "an output channel near zero"])
def test_exact_collection_matches_the_written_formula(dead_output):
    g = torch.Generator().manual_seed(0)
    c_out, c_in, tokens, steps = 12, 40, 7, 3
    linear = nn.Linear(c_in, c_out, bias=True)
    linear.weight.data = torch.randn(c_out, c_in, generator=g)
    linear.bias.data = torch.randn(c_out, generator=g)
    direction = linear.weight.data[0] / linear.weight.data[0].norm()
    if dead_output:  # inputs orthogonal to W_0 and a tiny bias: ||Y_0|| about 1e-10, the eps term matters
        linear.bias.data[0] = 1e-11
    layer = TargetLayer("down.0.0.0", "x", "in.0", "down_blocks.0", (c_out, c_in), linear)
    targets = UNetTargets(layers=(layer,), family="test", context_dim=0)
    plan = GroupPlan(("c",), (0,), (1,))
    collector = SaliencyCollector(targets, plan, saliency_steps=steps, mode="exact", r1=0.1)
    groups = [0, 0, 1, 1, 1]
    samples, outputs = [], []
    with collector.attached(), torch.no_grad():
        for step in range(steps):
            collector.set_step(step)
            collector.set_rows(torch.tensor(groups))
            x = torch.randn(len(groups), tokens, c_in, generator=g)
            if dead_output:
                x -= (x @ direction).unsqueeze(-1) * direction
            samples.append(list(x))
            outputs.append(list(linear(x)))
    got = collector.result().layers["down.0.0.0"].integrated[0]
    expected = reference_integrated(linear.weight.detach(), samples, outputs, groups, 0.1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
