"""Every FIA formula checked against numbers worked out by hand on a 2 x 4 layer.

W = [[1, -2, 3, -4], [0.5, 1, -1, 2]]   (C_out = 2, C_in = 4; flat index = 4 * row + column)
"""

import math

import pytest
import torch
from torch import nn

from fia_engine import ConceptMasks, GroupPlan, SaliencyCollector, agnostic_threshold, fuse
from fia_engine.layers import TargetLayer, UNetTargets
from fia_engine.localize import StepIntegrator, select_neurons, step_threshold

W = torch.tensor([[1.0, -2.0, 3.0, -4.0], [0.5, 1.0, -1.0, 2.0]])
S_HAND = torch.tensor([[0.8, 0.0, 0.0, 4.0], [0.4, 0.0, 0.0, 2.0]])


def tiny_targets() -> UNetTargets:
    linear = nn.Linear(4, 2, bias=False)
    linear.weight.data.copy_(W)
    layer = TargetLayer(
        "down.0.0.0",
        "x",
        "input_blocks.1.1.transformer_blocks.0.ff.net.2",
        "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2",
        (2, 4),
        linear,
    )
    return UNetTargets(layers=(layer,), family="test", context_dim=0)


def run_collector(mode: str, samples: list[list[list[float]]], groups: list[int], r1: float = 0.05):
    """One step, one UNet call: a batch of samples (tokens x C_in) through the 2 x 4 layer."""
    targets = tiny_targets()
    plan = GroupPlan(concepts=("c",), concept_groups=(0,), base_groups=(1,))
    collector = SaliencyCollector(targets, plan, saliency_steps=1, mode=mode, r1=r1)
    with collector.attached():
        collector.set_step(0)
        collector.set_rows(torch.tensor(groups))
        targets.layers[0].module(torch.tensor(samples, dtype=torch.float32))
    return collector.result().layers["down.0.0.0"]


def test_fast_saliency_by_hand():
    # Token rows are L2-normalised, then column norms taken over the tokens of a sample:
    #   concept 1: rows (3,4,0,0) (0,0,0,2) -> (.6,.8,0,0) (0,0,0,1) -> n = (.6, .8, 0, 1)
    #   concept 2: rows (1,0,0,0) (0,0,0,1)                           -> n = (1, 0, 0, 1)
    #   base 1:    rows (0,1,0,0) (0,0,1,0)                           -> n = (0, 1, 1, 0)
    #   base 2:    rows (0,0,1,0) (0,0,1,0)                           -> n = (0, 0, sqrt2, 0)
    # mean_c = (.8, .4, 0, 1); mean_b = (0, .5, (1+sqrt2)/2, 0); sample std_b = (0, 1/sqrt2, (sqrt2-1)/sqrt2, 0)
    # relu(mean_c - mean_b - std_b) = (.8, 0, 0, 1);  S = |W| * that = S_HAND
    samples = [
        [[3, 4, 0, 0], [0, 0, 0, 2]],
        [[1, 0, 0, 0], [0, 0, 0, 1]],
        [[0, 1, 0, 0], [0, 0, 1, 0]],
        [[0, 0, 1, 0], [0, 0, 1, 0]],
    ]
    layer = run_collector("fast", samples, [0, 0, 1, 1])
    torch.testing.assert_close(layer.column_scores[0, 0], torch.tensor([0.8, 0.0, 0.0, 1.0]))
    torch.testing.assert_close(layer.weight_abs * layer.column_scores[0, 0], S_HAND)


def test_fast_saliency_ignores_rows_marked_minus_one():
    samples = [[[3, 4, 0, 0], [0, 0, 0, 2]], [[9, 9, 9, 9], [9, 9, 9, 9]], [[0, 1, 0, 0], [0, 0, 1, 0]]]
    layer = run_collector("fast", samples, [0, -1, 1])
    # single samples: std = 0; n_c = (.6, .8, 0, 1), n_b = (0, 1, 1, 0) -> relu(diff) = (.6, 0, 0, 1)
    torch.testing.assert_close(layer.column_scores[0, 0], torch.tensor([0.6, 0.0, 0.0, 1.0]))


def test_exact_saliency_by_hand():
    # Concept sample X rows (1,0,0,0) (0,1,0,0): Y = X W^T rows (1, .5) (-2, 1)
    #   X_0 = (1,0), X_1 = (0,1); Y_0 = (1,-2), ||Y_0|| = sqrt5; Y_1 = (.5, 1), ||Y_1|| = sqrt5/2
    #   V[i,j] = |<X_j,Y_i>| / ||Y_i||  ->  V[0,0] = 1/sqrt5, V[0,1] = 2/sqrt5, V[1,0] = 1/sqrt5, V[1,1] = 2/sqrt5
    # Base sample X rows (0,0,1,0) (1,0,0,0): Y rows (3,-1) (1,.5)
    #   X_0 = (0,1), X_2 = (1,0); Y_0 = (3,1), ||Y_0|| = sqrt10; Y_1 = (-1,.5), ||Y_1|| = sqrt5/2
    #   V[0,0] = 1/sqrt10, V[0,2] = 3/sqrt10, V[1,0] = 1/sqrt5, V[1,2] = 2/sqrt5
    # One sample each: std = 0.  S = |W| * relu(V_c - V_b):
    #   S[0,0] = 1/sqrt5 - 1/sqrt10, S[0,1] = 2 * 2/sqrt5 = 4/sqrt5, S[1,1] = 1 * 2/sqrt5, all others 0
    # r1 = 0.05 of 8 -> k = 1 -> tau = max S = 4/sqrt5 -> no entry is strictly above it, so
    #   A = 1/2 * S / max S
    s5, s10 = math.sqrt(5), math.sqrt(10)
    saliency = torch.tensor([[1 / s5 - 1 / s10, 4 / s5, 0, 0], [0, 2 / s5, 0, 0]])
    expected = 0.5 * saliency / (4 / s5)
    samples = [[[1, 0, 0, 0], [0, 1, 0, 0]], [[0, 0, 1, 0], [1, 0, 0, 0]]]
    layer = run_collector("exact", samples, [0, 1])
    torch.testing.assert_close(layer.integrated[0], expected, rtol=1e-5, atol=1e-6)
    assert layer.integrated[0, 0, 1] == pytest.approx(0.5)
    assert layer.integrated[0, 1, 1] == pytest.approx(0.25)


def test_step_threshold_is_kth_largest():
    # r1 = .25 of 8 entries -> k = 2 -> the 2nd largest of S_HAND is 2
    assert step_threshold(S_HAND, 0.25) == 2.0
    # r1 = .05 -> floor(.4) = 0 -> k = max(1, 0) = 1 -> the largest, 4
    assert step_threshold(S_HAND, 0.05) == 4.0


def test_time_integration_by_hand():
    second = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 0.0, 0.0]])
    integrator = StepIntegrator(r1=0.25)
    integrator.add(S_HAND)  # tau = 2 -> hit only at (0,3)
    integrator.add(second)  # tau = 2 (two entries equal 2) -> no entry strictly above: no hits
    # mean S = [[.4, 0, 1, 3], [.7, 0, 0, 1]], max 3; hit rate (0,3) = 1/2
    expected = 0.5 * torch.tensor([[0.4, 0, 1, 3], [0.7, 0, 0, 1]]) / 3 + 0.5 * torch.tensor(
        [[0, 0, 0, 0.5], [0, 0, 0, 0]]
    )
    torch.testing.assert_close(integrator.result(), expected)


A = torch.tensor([[0.9, 0.1, 0.8, 0.0], [0.3, 0.7, 0.0, 0.2]])


def test_row_and_layer_topk_intersection():
    # r2 = .25: per row top max(1, floor(.25*4)) = 1 -> {(0,0), (1,1)}; layer top floor(.25*8) = 2 -> {(0,0), (0,2)}
    # Q = intersection = {(0,0)} -> flat [0]
    assert select_neurons(A, 0.25).tolist() == [0]
    # r2 = .5: rows top 2 -> {(0,0),(0,2),(1,1),(1,0)}; layer top 4 -> 0.9, 0.8, 0.7, 0.3 -> same set
    assert select_neurons(A, 0.5).tolist() == [0, 2, 4, 5]


def test_selection_never_takes_zero_saliency():
    # r2 = 1 would take everything; the two zeros (flat 3 and 6) are left out
    assert select_neurons(A, 1.0).tolist() == [0, 1, 2, 4, 5, 7]


def concept_masks(sets: dict[str, list[int]]) -> ConceptMasks:
    return ConceptMasks(
        concepts=tuple(sets),
        indices={c: {"down.0.0.0": torch.tensor(v)} for c, v in sets.items()},
        family="test",
        shapes={"down.0.0.0": (2, 4)},
        fingerprint="f",
        weight_signature={},
        mode="fast",
        r1=0.05,
        r2={c: 0.01 for c in sets},
    )


def pruned(mask) -> list[int]:
    return mask.indices["down.0.0.0"].tolist()


def test_fusion_one_concept_prunes_its_whole_set():
    # tau_ca = max(2, ceil(.6 * 1)) = 2: every selected weight has s = 1 < 2
    assert pruned(fuse(concept_masks({"a": [0, 2, 5]}), alpha=0.6)) == [0, 2, 5]


def test_fusion_two_concepts_spare_shared():
    # s: 0->1, 2->2, 3->1, 5->1; tau_ca = max(2, ceil(1.2)) = 2 -> weight 2 is agnostic
    mask = fuse(concept_masks({"a": [0, 2, 5], "b": [2, 3]}), alpha=0.6)
    assert pruned(mask) == [0, 3, 5]
    assert mask.metadata["agnostic_kept"] == 1


def test_fusion_three_concepts():
    sets = {"a": [0, 2, 5], "b": [2, 3], "c": [2, 5, 7]}
    # s: 0->1, 2->3, 3->1, 5->2, 7->1
    # alpha .6: tau = max(2, ceil(1.8)) = 2 -> prune s = 1: {0, 3, 7}; agnostic {2, 5}
    assert pruned(fuse(concept_masks(sets), alpha=0.6)) == [0, 3, 7]
    # alpha .8: tau = ceil(2.4) = 3 -> prune s in {1, 2}: {0, 3, 5, 7}; agnostic {2}
    assert pruned(fuse(concept_masks(sets), alpha=0.8)) == [0, 3, 5, 7]
    # no protection: plain union
    assert pruned(fuse(concept_masks(sets), alpha=0.6, protect_agnostic=False)) == [0, 2, 3, 5, 7]


def test_agnostic_threshold_has_no_float_rounding_surprise():
    assert 0.28 * 25 > 7  # 7.000000000000001 in floating point
    assert agnostic_threshold(0.28, 25) == 7
    assert agnostic_threshold(0.6, 5) == 3
    assert agnostic_threshold(0.8, 10) == 8
    assert agnostic_threshold(0.6, 1) == 2
