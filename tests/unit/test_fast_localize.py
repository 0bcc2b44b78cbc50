"""The fast localisation path against the straightforward formula, bit for bit.

The reference builds every per-step matrix S_t = |W| * s_t, takes tau_t with torch.kthvalue,
counts the hits, forms A densely, and selects Q with stable sorts (ties at the lower flat
index). Inputs are random with many ties: weights and scores drawn from a few values, many
zero scores, fp16-valued weights, and r1 / r2 values that put the boundaries inside ties.
"""

from __future__ import annotations

import math

import pytest
import torch

from fia_engine import GroupPlan, SaliencyCollector, localize_concepts, neurons
from fia_engine.fast_localize import (
    column_means,
    dense_integrated,
    integrate_densely,
    smallest_factor,
    step_hits,
    top_lists,
)
from fia_engine.layers import TargetLayer, UNetTargets
from fia_engine.localize import integrated_value, select_neurons, selection_counts, step_threshold
from fia_engine.neurons import integrated_saliency
from fia_engine.ranking import kth_largest
from fia_engine.sorted_columns import ColumnOrder

R1S = (0.05, 0.25, 0.5, 1.0, 0.001)
R2S = (0.01, 0.1, 0.3, 1.0)


def reference_threshold(saliency: torch.Tensor, r1: float) -> torch.Tensor:
    flat = saliency.reshape(-1)
    k = max(1, math.floor(r1 * flat.numel()))
    return torch.kthvalue(flat, flat.numel() - k + 1).values


def reference_integrated(weight_abs: torch.Tensor, scores: torch.Tensor, r1: float):
    """A of one concept from its (steps, C_in) column scores, the dense way; and the tau_t."""
    hits = torch.zeros_like(weight_abs, dtype=torch.int16)
    thresholds = []
    for step_scores in scores:
        step = weight_abs * step_scores.unsqueeze(0)
        thresholds.append(reference_threshold(step, r1))
        hits += step > thresholds[-1]
    mean = weight_abs * column_means(scores.unsqueeze(0))[0]
    return integrated_value(mean, mean.max(), hits, len(scores)), torch.stack(thresholds)


def reference_select(integrated: torch.Tensor, r2: float) -> torch.Tensor:
    rows, cols = integrated.shape
    k_global, k_row = selection_counts(r2, rows, cols)
    flat = integrated.reshape(-1)
    in_global = torch.zeros(flat.numel(), dtype=torch.bool)
    in_global[torch.sort(-flat, stable=True).indices[:k_global]] = True
    row_top = torch.sort(-integrated, dim=1, stable=True).indices[:, :k_row] + torch.arange(rows).unsqueeze(1) * cols
    in_row = torch.zeros_like(in_global)
    in_row[row_top.reshape(-1)] = True
    return torch.nonzero(in_global & in_row & (flat > 0)).reshape(-1)


def random_case(seed: int):
    """(|W|, column scores (concepts, steps, C_in), r1): ties on purpose in most cases."""
    g = torch.Generator().manual_seed(seed)
    rows, cols = [(8, 16), (40, 100), (64, 256), (33, 70)][seed % 4]
    concepts, steps = 1 + seed % 3, 1 + seed % 4
    shape = (concepts, steps, cols)
    kind = seed % 3
    if kind == 0:  # a handful of values: ties everywhere
        weight = torch.randint(0, 4, (rows, cols), generator=g).float() * 0.25
        scores = (torch.randint(-2, 4, shape, generator=g).float() * 0.5).clamp(min=0)
    elif kind == 1:  # fp16-valued weights (duplicates within columns), relu'd scores
        weight = torch.randn(rows, cols, generator=g).abs().half().float()
        scores = torch.randn(shape, generator=g).clamp(min=0)
    else:  # mostly zero scores, as real collections have
        weight = torch.randn(rows, cols, generator=g).abs()
        scores = torch.rand(shape, generator=g) * (torch.rand(shape, generator=g) > 0.7)
    return weight, scores, R1S[seed % len(R1S)]


@pytest.mark.parametrize("seed", range(24))
def test_thresholds_hits_and_integrated_saliency_match_the_dense_formula(seed):
    weight, scores, r1 = random_case(seed)
    order = ColumnOrder.of(weight)
    hits = step_hits(order, scores, r1)
    for concept in range(scores.shape[0]):
        expected, thresholds = reference_integrated(weight, scores[concept], r1)
        assert torch.equal(hits.thresholds[concept], thresholds)
        fast = dense_integrated(order, hits, concept)
        assert torch.equal(fast.view(torch.int32), expected.view(torch.int32)), "A differs in some bit"
        plain = integrate_densely(weight, scores[concept], r1)  # the small-layer path
        assert torch.equal(plain.view(torch.int32), expected.view(torch.int32))


@pytest.mark.parametrize("seed", range(24))
def test_selection_matches_stable_sorts(seed):
    weight, scores, r1 = random_case(seed)
    order = ColumnOrder.of(weight)
    hits = step_hits(order, scores, r1)
    rows, cols = weight.shape
    lists = top_lists(order, hits, torch.full((scores.shape[0],), rows * cols))
    for r2 in R2S:
        k_global, k_row = selection_counts(r2, rows, cols)
        for concept, top in enumerate(lists):
            expected = reference_select(reference_integrated(weight, scores[concept], r1)[0], r2)
            assert torch.equal(top.select(k_global, k_row), expected), (r2, concept)
            short = top_lists(order, hits, torch.full((scores.shape[0],), k_global))[concept]
            assert torch.equal(short.select(k_global, k_row), expected), "a list just long enough"


@pytest.mark.parametrize("seed", range(12))
def test_dense_selection_and_threshold_match_the_references(seed):
    g = torch.Generator().manual_seed(seed)
    matrix = torch.randint(0, 5, (30, 50), generator=g).float() / 4 if seed % 2 else torch.rand(30, 50, generator=g)
    for r2 in R2S:
        assert torch.equal(select_neurons(matrix, r2), reference_select(matrix, r2))
    for r1 in R1S:
        assert torch.equal(step_threshold(matrix, r1), reference_threshold(matrix, r1))
    assert kth_largest(matrix, 1) == matrix.max() and kth_largest(matrix, matrix.numel()) == matrix.min()


def test_smallest_factor_is_the_exact_boundary():
    g = torch.Generator().manual_seed(0)
    scale = torch.rand(4000, generator=g) * (torch.rand(4000, generator=g) > 0.3)
    scale[:10] = torch.tensor([1e-30, 1e30, 3e-38, 1.0, 0.5, 2.0, 1e-45, 7.0, 0.0, 1e-20])
    value = torch.rand(4000, generator=g) * (torch.rand(4000, generator=g) > 0.2)
    value[10:20] = torch.tensor([1e-40, 1e38, 1e-45, 0.0, 3.4e38, 1e-30, 1e-38, 2.0, 0.5, 1e-7])
    for strict in (True, False):
        found = smallest_factor(scale, value, strict)
        below = torch.nextafter(found, torch.zeros_like(found))

        def passes(x, strict=strict):
            product = x * scale
            return (product > value) if strict else (product >= value)

        assert bool((passes(found) | torch.isinf(found)).all())
        assert not bool((passes(below) & (found > 0)).any()), "a smaller factor passes too"
        none_pass = torch.isinf(found)
        largest = torch.full_like(found, torch.finfo(torch.float32).max)
        assert not bool((passes(largest) & none_pass).any()), "'no factor' returned although one exists"


def collected(seed: int = 0, concepts: int = 3, steps: int = 3):
    """A fast-mode ConceptSaliency collected by the real hooks on two random layers."""
    g = torch.Generator().manual_seed(seed)
    layers = []
    for index, (c_out, c_in) in enumerate([(24, 96), (16, 64)]):
        linear = torch.nn.Linear(c_in, c_out, bias=False)
        linear.weight.data = torch.randn(c_out, c_in, generator=g).half().float()
        layers.append(
            TargetLayer(f"down.{index}.0.0", "x", f"in.{index}", f"down_blocks.{index}", (c_out, c_in), linear)
        )
    targets = UNetTargets(layers=tuple(layers), family="test", context_dim=0)
    names = tuple(f"c{i}" for i in range(concepts))
    plan = GroupPlan(names, tuple(range(concepts)), (concepts,) * concepts)
    collector = SaliencyCollector(targets, plan, saliency_steps=steps, mode="fast")
    groups = torch.tensor([c for c in range(concepts + 1) for _ in range(3)])
    with collector.attached():
        for step in range(steps):
            collector.set_step(step)
            collector.set_rows(groups)
            for layer in layers:
                layer.module(torch.randn(len(groups), 5, layer.shape[1], generator=g).relu())
    return collector.result()


@pytest.fixture(params=["sorted columns", "step matrices"])
def layer_path(request, monkeypatch):
    """Run a test through each of localisation's two paths (chosen by layer size)."""
    monkeypatch.setattr(neurons, "DENSE_BELOW", 0 if request.param == "sorted columns" else 2**40)
    return request.param


def test_a_retune_reads_the_cache_and_gives_what_a_fresh_run_gives(layer_path):
    calls = []
    saliency = collected()
    first = localize_concepts(saliency, 0.05, 0.01, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (2, 2), "the first run computes and reports each layer"
    for r2, overrides in ((0.012, None), (0.004, {"c1": 0.014}), (0.03, None), (0.01, None)):
        calls.clear()
        again = localize_concepts(saliency, 0.05, r2, overrides, progress=lambda d, t: calls.append((d, t)))
        fresh = localize_concepts(collected(), 0.05, r2, overrides)
        for concept in saliency.concepts:
            for layer in saliency.layers:
                assert torch.equal(again.indices[concept][layer], fresh.indices[concept][layer])
    assert all(
        torch.equal(first.indices[c][layer], localize_concepts(saliency, 0.05, 0.01).indices[c][layer])
        for c in saliency.concepts
        for layer in saliency.layers
    )
    calls.clear()
    localize_concepts(saliency, 0.05, 0.011, progress=lambda d, t: calls.append((d, t)))
    assert calls == [], "a re-tune within the cached lists does no work worth a progress bar"


def test_localize_concepts_equals_the_dense_reference_for_every_layer_and_r1(layer_path):
    saliency = collected(seed=3)
    for r1 in (0.05, 0.3):
        masks = localize_concepts(saliency, r1, 0.05)
        for c, concept in enumerate(saliency.concepts):
            for layer, data in saliency.layers.items():
                weight_abs = data.weight_abs.float()
                expected_a, _ = reference_integrated(weight_abs, data.column_scores[c], r1)
                assert torch.equal(integrated_saliency(saliency, layer, c, r1), expected_a)
                assert torch.equal(masks.indices[concept][layer], reference_select(expected_a, 0.05))


@pytest.mark.parametrize("zeros", [0.0, 0.5, 0.97, 1.0])
def test_kth_largest_of_mostly_zero_saliency_is_exact(zeros):
    # Saliency is mostly exact zeros; the CPU path ranks only the positive entries there.
    g = torch.Generator().manual_seed(7)
    values = torch.rand(5000, generator=g) * (torch.rand(5000, generator=g) >= zeros)
    values[:3] = -0.0  # a zero with the sign bit still counts as zero
    for k in (1, 2, 150, 151, 4999, 5000):
        expected = torch.kthvalue(values, values.numel() - k + 1).values
        assert kth_largest(values, k) == expected, (zeros, k)
    signed = values - 0.5
    assert kth_largest(signed, 10) == torch.kthvalue(signed, signed.numel() - 9).values
