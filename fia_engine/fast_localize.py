"""Stage 2 for fast-mode saliency, without building any weight-sized matrix per step.

Fast mode keeps, per concept and step, the column scores s_t (C_in values) and, once per
layer, |W|; its per-step saliency is S_t = |W| * s_t (each column scaled). Per concept:

    tau_t = k-th largest entry of S_t, k = max(1, floor(r1 * numel))      (as localize.py)
    hits  = number of steps with S_t > tau_t                              (as localize.py)
    M     = |W| * mean_t(s_t)       (mean_t(S_t) with |W| factored out: one rounding, not T)
    A     = 1/2 * M / max(M) + 1/2 * hits / T                             (integrated_value)
    Q     = select_neurons(A, r2): row top-k ∩ layer top-k ∩ A > 0, ties at the lower index

Inside one column every one of these grows with |W[i, j]|, so with |W|'s columns sorted
(sorted_columns.ColumnOrder) each step's threshold is a k-th-largest search over sorted
columns, the hits of a column are a step function of the sorted position, and the top sets
of A are read off sorted positions as well. Per concept this costs O(C_in log C_out) per
step instead of passes over C_out * C_in values; the results equal the dense formula's bit
for bit (tests/unit/test_fast_localize.py checks that against a dense reference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .localize import integrated_value
from .ranking import TopList, kth_largest
from .sorted_columns import COMPACT, ColumnOrder, SortedProblems, kth_largest_in_columns, ragged

_INF_BITS = 0x7F800000
_NEAR = 2  # the exact factor lies within an ulp or two of value / scale (normal range)
_ROWS_PER_CHUNK = 128  # (concept, step) problems searched together


def smallest_factor(scale: torch.Tensor, value: torch.Tensor, strict: bool) -> torch.Tensor:
    """Per element the smallest float32 x >= 0 with fl(x * scale) > value (>= if not strict);
    +inf where there is none. scale >= 0 and value >= 0, broadcastable float32 tensors.

    x * scale rounds monotonically in x, so the entries of a column (sorted |W| values) that
    pass are exactly those >= this x. For a positive scale it lies within an ulp or two of
    value / scale: the neighbouring bit patterns are tried, checked at both ends, and where
    the check fails (underflow) a bisection over all bit patterns settles it.
    """
    scale, value = torch.broadcast_tensors(scale.float(), value.float())
    zero_passes = (value < 0) if strict else (value <= 0)
    result = torch.where(zero_passes, 0.0, math.inf).to(scale.dtype)  # what a zero scale gives
    positive = scale > 0
    if bool(positive.any()):
        result[positive] = _positive_factor(scale[positive], value[positive], strict)
    return result


def _passes(bits: torch.Tensor, scale: torch.Tensor, value: torch.Tensor, strict: bool) -> torch.Tensor:
    """Whether the float with these bits passes; bits -1 stand below every float, +inf always passes."""
    product = bits.clamp(0, _INF_BITS).to(torch.int32).view(torch.float32) * scale
    ok = (product > value) if strict else (product >= value)
    return (ok | (bits >= _INF_BITS)) & (bits >= 0)


def _positive_factor(scale: torch.Tensor, value: torch.Tensor, strict: bool) -> torch.Tensor:
    guess = (value / scale).view(torch.int32).long().clamp(max=_INF_BITS)
    offsets = torch.arange(-_NEAR, _NEAR + 1, device=scale.device)
    window = guess.unsqueeze(1) + offsets  # the neighbours of value / scale
    ok = _passes(window, scale.unsqueeze(1), value.unsqueeze(1), strict)
    settled = ~ok[:, 0] & ok[:, -1]  # fails at the low end, passes at the high end
    found = window[:, 0] + (~ok).sum(dim=1)  # passing is monotone: the failures come first
    if not bool(settled.all()):
        where = torch.nonzero(~settled).reshape(-1)
        found[where] = _bisect_bits(scale[where], value[where], strict)
    return found.to(torch.int32).view(torch.float32)


def _bisect_bits(scale: torch.Tensor, value: torch.Tensor, strict: bool) -> torch.Tensor:
    low = torch.full_like(scale, -1, dtype=torch.long)  # fails by definition
    high = torch.full_like(scale, _INF_BITS, dtype=torch.long)  # passes by definition
    open_ = high - low > 1
    while bool(open_.any()):
        middle = (low + high) // 2
        ok = _passes(middle, scale, value, strict)
        high = torch.where(open_ & ok, middle, high)
        low = torch.where(open_ & ~ok, middle, low)
        open_ = high - low > 1
    return high


class StepProducts(SortedProblems):
    """S_t = |W| * s for a batch of score vectors s (one problem each)."""

    def __init__(self, order: ColumnOrder, scales: torch.Tensor):
        super().__init__(order, scales.shape[0])
        self.scales = scales.float() + 0.0  # -0.0 -> +0.0: products then order like their bits
        # Most scores are 0 (relu of a contrast): only the nonzero ones need a factor.
        self.nonzero_rows, self.nonzero_cols = torch.nonzero(self.scales > 0, as_tuple=True)
        self.nonzero_scales = self.scales[self.nonzero_rows, self.nonzero_cols]

    def pair_data(self, problem, col):
        return (self.scales.view(-1).index_select(0, problem * self.order.columns + col),)

    def value_of(self, data, col, pos):
        return self.order.value_at(col, pos) * data[0]

    def first_reaching(self, problems, value, strict, low, high):
        if int((high > low).sum()) * COMPACT <= low.numel():  # few pairs open: bisect those alone
            return super().first_reaching(problems, value, strict, low, high)
        listed = problems.numel()
        # Columns of zero score hold zeros only: all of them pass or none does. The factors are
        # laid out (column, problem), as searchsorted wants them.
        zero_passes = (value < 0) if strict else (value <= 0)
        factor = torch.where(zero_passes, 0.0, math.inf).to(torch.float32).unsqueeze(0).repeat(self.order.columns, 1)
        rows, cols, scales = self.nonzero_rows, self.nonzero_cols, self.nonzero_scales
        if listed != self.count:  # a subset of the problems, in ascending order
            local = torch.full((self.count,), -1, dtype=torch.long, device=low.device)
            local[problems] = torch.arange(listed, device=low.device)
            keep = local[rows] >= 0
            rows, cols, scales = local[rows[keep]], cols[keep], scales[keep]
        factor.view(-1)[cols * listed + rows] = _positive_factor(scales, value[rows], strict)
        return torch.searchsorted(self.order.values, factor).t()


@dataclass
class StepHits:
    """What A needs of one layer for every concept of a collection, at one r1.

    thresholds: (concepts, steps) tau_t; hit_start: (concepts, steps, C_in) the first sorted
    position of each column whose S_t exceeds tau_t (every later one does too); means:
    (concepts, C_in) mean_t(s_t); peak: (concepts,) max(M).
    """

    thresholds: torch.Tensor
    hit_start: torch.Tensor
    means: torch.Tensor
    peak: torch.Tensor

    @property
    def steps(self) -> int:
        return self.hit_start.shape[1]


def column_means(column_scores: torch.Tensor) -> torch.Tensor:
    """mean_t(s_t) per concept: (concepts, steps, C_in) -> (concepts, C_in)."""
    return column_scores.float().mean(dim=1)


def step_hits(order: ColumnOrder, column_scores: torch.Tensor, r1: float) -> StepHits:
    """Thresholds and hit positions of every (concept, step) of one layer."""
    concepts, steps, columns = column_scores.shape
    k = max(1, math.floor(r1 * columns * order.length))
    scales = column_scores.float().reshape(concepts * steps, columns)
    thresholds, starts = [], []
    for begin in range(0, scales.shape[0], _ROWS_PER_CHUNK):
        problems = StepProducts(order, scales[begin : begin + _ROWS_PER_CHUNK])
        tau, _, above = kth_largest_in_columns(problems, k)
        thresholds.append(tau)
        starts.append(above)
    means = column_means(column_scores)
    peak = (order.values[:, -1].unsqueeze(0) * means).amax(dim=1)  # max of M: each column's largest |W|
    return StepHits(
        thresholds=torch.cat(thresholds).reshape(concepts, steps),
        hit_start=torch.cat(starts).reshape(concepts, steps, columns).to(torch.int32),
        means=means,
        peak=peak,
    )


class IntegratedColumns(SortedProblems):
    """A of every concept of a StepHits, on the sorted grid."""

    def __init__(self, order: ColumnOrder, hits: StepHits):
        super().__init__(order, hits.means.shape[0])
        self.hits = hits
        # One row of step starts per (concept, column), for entries read one by one.
        self.starts = hits.hit_start.transpose(1, 2).reshape(-1, hits.steps).contiguous()

    def pair_data(self, problem, col):
        cell = problem * self.order.columns + col
        hits = self.hits
        return hits.means.view(-1).index_select(0, cell), hits.peak.index_select(0, problem), self.starts[cell]

    def value_of(self, data, col, pos):
        mean_score, peak, starts = data
        count = (starts <= pos.unsqueeze(1)).sum(dim=1)
        return integrated_value(self.order.value_at(col, pos) * mean_score, peak, count, self.hits.steps)

    def column_tops(self, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every entry from sorted position ``low[problem, column]`` to the top of its column:
        (problem, column, index into the sorted layer, value), one contiguous run per column.

        The step count of a run starts at its first position and grows by one at each step's
        start inside the run: a cumulative sum, instead of T comparisons per entry.
        """
        order, hits = self.order, self.hits
        problems, columns = low.shape
        cells = torch.arange(problems * columns, device=low.device)
        low = low.reshape(-1)
        lengths = order.length - low
        offsets = torch.cumsum(lengths, 0) - lengths
        sorted_index = torch.repeat_interleave(cells % columns * order.length + low - offsets, lengths)
        sorted_index += torch.arange(sorted_index.numel(), device=low.device)
        local, col = (
            torch.repeat_interleave(cells // columns, lengths),
            torch.repeat_interleave(cells % columns, lengths),
        )
        starts = hits.hit_start.transpose(1, 2).reshape(-1, hits.steps).long()  # (cells, steps)
        at_low = (starts <= low.unsqueeze(1)).sum(dim=1)
        inside = (starts > low.unsqueeze(1)) & (starts < order.length)
        rises = torch.zeros(sorted_index.numel() + 1, dtype=torch.int32, device=low.device)
        where = (offsets.unsqueeze(1) + starts - low.unsqueeze(1))[inside]
        rises.index_put_((where,), torch.ones_like(where, dtype=torch.int32), accumulate=True)
        climbed = torch.cumsum(rises[:-1], 0, dtype=torch.int32)
        before = torch.cat([climbed.new_zeros(1), climbed])[offsets]  # what earlier runs added
        count = torch.repeat_interleave(at_low - before, lengths) + climbed
        mean = order.values.view(-1).index_select(0, sorted_index) * torch.repeat_interleave(
            hits.means.reshape(-1), lengths
        )
        peak = torch.repeat_interleave(hits.peak.repeat_interleave(columns), lengths)
        return local, col, sorted_index, integrated_value(mean, peak, count, hits.steps)


def top_lists(order: ColumnOrder, hits: StepHits, counts: torch.Tensor) -> list[TopList]:
    """Per concept, the TopList of the ``counts[concept]`` largest entries of its A."""
    device = order.values.device
    counts = counts.to(device).clamp(max=order.columns * order.length)
    chosen = torch.nonzero(counts > 0).reshape(-1)
    empty = torch.empty(0, dtype=torch.long, device=device)
    lists = [TopList.of(empty, torch.empty(0, device=device), order.columns, int(n)) for n in counts.tolist()]
    if not chosen.numel():
        return lists
    problems = IntegratedColumns(order, _subset(hits, chosen))
    boundary, tied_start, above_start = kth_largest_in_columns(problems, counts[chosen])
    # Every entry above the boundary, and of those equal to it the lowest flat indices; ties at
    # a boundary of 0 are zeros, which a TopList leaves out.
    local, col, sorted_index, values = problems.column_tops(above_start)
    needed = (counts[chosen] - (order.length - above_start).sum(dim=1)) * (boundary > 0)
    tie_local, tie_col, tie_pos = _lowest_ties(order, tied_start, above_start, needed)
    local, col = torch.cat([local, tie_local]), torch.cat([col, tie_col])
    sorted_index = torch.cat([sorted_index, order.flat(tie_col, tie_pos)])
    values = torch.cat([values, boundary[tie_local]])
    flat = order.rows.view(-1).index_select(0, sorted_index).long() * order.columns + col
    built = TopList.many(local, flat, values, order.columns, counts[chosen].tolist())
    for index, top in zip(chosen.tolist(), built, strict=True):
        lists[index] = top
    return lists


def _lowest_ties(order, tied_start, above_start, needed):
    """Of the entries equal to each boundary, the ``needed`` ones with the lowest flat index,
    as (problem, column, position)."""
    local, col, pos = ragged(tied_start, torch.where((needed > 0).unsqueeze(1), above_start, tied_start))
    flat = order.row_at(col, pos).long() * order.columns + col
    ordering = torch.sort(local * (order.columns * order.length) + flat).indices
    local, col, pos = local[ordering], col[ordering], pos[ordering]
    per_problem = torch.bincount(local, minlength=needed.numel())
    rank = torch.arange(local.numel(), device=local.device) - (torch.cumsum(per_problem, 0) - per_problem)[local]
    keep = rank < needed[local]
    return local[keep], col[keep], pos[keep]


def _subset(hits: StepHits, which: torch.Tensor) -> StepHits:
    return StepHits(hits.thresholds[which], hits.hit_start[which], hits.means[which], hits.peak[which])


def integrate_densely(weight_abs: torch.Tensor, column_scores: torch.Tensor, r1: float) -> torch.Tensor:
    """A of one concept from its (steps, C_in) column scores, step matrix by step matrix: the
    plain formula, cheaper than the sorted-column search for small layers."""
    weight = weight_abs.float()
    k = max(1, math.floor(r1 * weight.numel()))
    step = torch.empty_like(weight)
    hits = torch.zeros_like(weight, dtype=torch.int16)
    for scores in column_scores.float():
        torch.mul(weight, scores.unsqueeze(0), out=step)
        hits += step > kth_largest(step, k).to(step.device)
    mean = weight * column_means(column_scores.unsqueeze(0))[0]
    return integrated_value(mean, mean.max(), hits, column_scores.shape[0])


def dense_integrated(order: ColumnOrder, hits: StepHits, concept: int) -> torch.Tensor:
    """A of one concept as a (C_out, C_in) matrix (for inspection and tests; selection never needs it)."""
    columns, length = order.columns, order.length
    problems = IntegratedColumns(order, _subset(hits, torch.tensor([concept], device=order.values.device)))
    col = torch.arange(columns, device=order.values.device).unsqueeze(1).expand(columns, length)
    pos = torch.arange(length, device=order.values.device).expand(columns, length)
    values = problems.evaluate(torch.zeros_like(col), col, pos)
    dense = torch.empty(length, columns, device=values.device)
    dense[order.rows.long(), col] = values
    return dense
