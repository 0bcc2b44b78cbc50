"""Localisation gives the IEEE result, and finishes, in a process that flushes subnormals.

torch.set_flush_denormal(True) is process state some hosts set (our own training did). It
once made the sorted-column search run out of rounds on k-th largest values of 0.
"""

from __future__ import annotations

import pytest
import torch

from fia_engine.fast_localize import step_hits, top_lists
from fia_engine.float_mode import flushing_subnormals, ieee_subnormals
from fia_engine.sorted_columns import ColumnOrder
from tests.unit.test_fast_localize import random_case


@pytest.fixture
def flushing():
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _localise(seed: int):
    weight, scores, r1 = random_case(seed)
    order = ColumnOrder.of(weight)
    hits = step_hits(order, scores, r1)
    lists = top_lists(order, hits, torch.full((scores.shape[0],), weight.numel() // 10))
    return hits.thresholds, hits.hit_start, [top.select(weight.numel() // 10, weight.shape[1]) for top in lists]


@pytest.mark.parametrize("seed", [2, 6, 14, 18, 22])
def test_localisation_under_flushed_subnormals_equals_the_ieee_result(seed, flushing):
    assert flushing_subnormals()
    flushed = _localise(seed)
    assert flushing_subnormals(), "the host's mode is put back"
    torch.set_flush_denormal(False)
    expected = _localise(seed)
    assert torch.equal(flushed[0], expected[0]) and torch.equal(flushed[1], expected[1])
    assert all(torch.equal(a, b) for a, b in zip(flushed[2], expected[2], strict=True))


def test_the_decorator_restores_the_mode_after_an_error(flushing):
    @ieee_subnormals
    def failing():
        assert not flushing_subnormals()
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        failing()
    assert flushing_subnormals()
