"""The k-th largest entry of matrices whose columns are each non-decreasing, without a full pass.

Fast mode's per-step saliency is S_t[i, j] = |W[i, j]| * s_t[j] with s_t >= 0, and its
integrated saliency A[i, j] also grows with |W[i, j]| inside each column (fast_localize.py).
Once each column of |W| is sorted (``ColumnOrder``, one sort per layer, reused by every
concept, step, r1 and r2), such a matrix is a set of sorted columns: counting the entries at
or above a value takes one binary search per column, and the k-th largest value is found by
narrowing a value bracket until few entries lie inside it, then ranking those few directly.
Every comparison is made on the exact float32 value the dense formula computes, so the
result equals a dense k-th-largest selection bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .float_mode import ieee_subnormals

SAMPLE = 4096  # entries used to guess the first bracket (speed only, never results)
BUDGET = 4096  # a bracket holding at most this many entries of a problem is ranked directly
COMPACT = 8  # below 1 open (problem, column) pair in this many, only the open ones are searched
_MAX_ROUNDS = 200  # a bit-midpoint step at least halves a bracket: 31 would do


@dataclass
class ColumnOrder:
    """Each column of a non-negative (C_out, C_in) matrix sorted ascending, stored as rows.

    ``values[j]`` is column j in ascending order, ``rows[j]`` the row each entry came from.
    ``sample_cols`` / ``sample_pos`` are fixed random entries that guess a first bracket.
    """

    values: torch.Tensor  # (C_in, C_out) float32
    rows: torch.Tensor  # (C_in, C_out) int16 or int32
    sample_cols: torch.Tensor
    sample_pos: torch.Tensor

    @classmethod
    def of(cls, matrix: torch.Tensor, seed: int = 0) -> ColumnOrder:
        columns = matrix.detach().float().t().contiguous()
        if bool((columns < 0).any()) or not bool(torch.isfinite(columns).all()):
            raise ValueError("ColumnOrder needs finite, non-negative values")
        length = columns.shape[1]
        row_bits = max(1, (length - 1).bit_length())
        sort = _sort_columns_numpy if columns.device.type == "cpu" else _sort_columns_torch
        values, rows = sort(columns, row_bits)
        rows = rows.to(torch.int16 if length <= 2**15 else torch.int32)
        generator = torch.Generator().manual_seed(seed)
        flat = torch.randint(values.numel(), (min(SAMPLE, values.numel()),), generator=generator)
        flat = flat.to(values.device)
        return cls(values, rows, flat // length, flat % length)

    @property
    def columns(self) -> int:
        return self.values.shape[0]

    @property
    def length(self) -> int:
        return self.values.shape[1]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.values, self.rows))

    def flat(self, col: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return (col * self.length + pos).reshape(-1)

    def value_at(self, col: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.values.view(-1).index_select(0, self.flat(col, pos)).view(pos.shape)

    def row_at(self, col: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.rows.view(-1).index_select(0, self.flat(col, pos)).view(pos.shape)

    def grid_cols(self, problems: int) -> torch.Tensor:
        return torch.arange(self.columns, device=self.values.device).expand(problems, self.columns)


class SortedProblems:
    """``count`` matrices on one ColumnOrder's grid, each column non-decreasing in sorted order.

    A subclass says what a (problem, column) pair needs (``pair_data``, gathered once per
    search) and how an entry's value follows from it (``value_of``).
    """

    def __init__(self, order: ColumnOrder, count: int):
        self.order = order
        self.count = count

    def pair_data(self, problem: torch.Tensor, col: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def value_of(self, data: tuple[torch.Tensor, ...], col: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, problem: torch.Tensor, col: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Values of the entries (problem, column, sorted position); arguments of one shape."""
        shape = pos.shape
        problem, col, pos = problem.reshape(-1), col.reshape(-1), pos.reshape(-1)
        return self.value_of(self.pair_data(problem, col), col, pos).view(shape)

    def first_reaching(
        self, problems: torch.Tensor, value: torch.Tensor, strict: bool, low: torch.Tensor, high: torch.Tensor
    ) -> torch.Tensor:
        """Per listed problem and column: the first sorted position whose value is >= ``value``
        (> if ``strict``), known to lie in [low, high]; high may be the column length.

        A bisection on the (problem, column) pairs whose [low, high] is still open; each pair's
        data is gathered once. The top of each window is tried first: most columns of a
        top-k search have nothing at or above the value and close at once.
        """
        result = low.clone()
        local, col = torch.nonzero(high > low, as_tuple=True)
        lo, hi = low[local, col], high[local, col]
        target = value[local]
        data = self.pair_data(problems[local], col)
        middle = hi - 1
        while lo.numel():
            found = self.value_of(data, col, middle)
            passes = (found > target) if strict else (found >= target)
            hi = torch.where(passes, middle, hi)
            lo = torch.where(passes, lo, middle + 1)
            done = lo >= hi
            if bool(done.any()):
                result[local[done], col[done]] = lo[done]
                keep = ~done
                local, col, lo, hi, target = (t[keep] for t in (local, col, lo, hi, target))
                data = tuple(t[keep] for t in data)
            middle = (lo + hi) // 2
        return result


def _sort_columns_torch(columns: torch.Tensor, row_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row of ``columns``: one int64 key per entry, the value's bits (non-negative
    floats order like them) and then its position, so equal values keep their row order."""
    keys = (columns.view(torch.int32).long() << row_bits) | torch.arange(columns.shape[1], device=columns.device)
    keys = torch.sort(keys, dim=1).values
    return (keys >> row_bits).to(torch.int32).view(torch.float32), keys & ((1 << row_bits) - 1)


def _sort_columns_numpy(columns: torch.Tensor, row_bits: int, block: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The same keys sorted by numpy (several times faster on a CPU), a block of rows at a time
    in reused buffers: fresh weight-sized temporaries cost more than the sort."""
    count, length = columns.shape
    bits = columns.numpy().view(np.int32)
    values = np.empty((count, length), np.int32)
    rows = np.empty((count, length), np.int32)
    keys = np.empty((min(block, count), length), np.int64)
    spare = np.empty_like(keys)
    positions = np.arange(length, dtype=np.int64)
    for start in range(0, count, block):
        stop = min(start + block, count)
        key, out = keys[: stop - start], spare[: stop - start]
        np.copyto(key, bits[start:stop])
        np.left_shift(key, row_bits, out=key)
        np.bitwise_or(key, positions, out=key)
        key.sort(axis=1)
        np.right_shift(key, row_bits, out=out)
        np.copyto(values[start:stop], out, casting="unsafe")
        np.bitwise_and(key, (1 << row_bits) - 1, out=out)
        np.copyto(rows[start:stop], out, casting="unsafe")
    return torch.from_numpy(values).view(torch.float32), torch.from_numpy(rows)


def _next_up(x: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(x, torch.full_like(x, math.inf))


def _bit_midpoint(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A float strictly between two non-negative, non-adjacent floats: the middle bit pattern."""
    bits = (low.view(torch.int32).long() + high.view(torch.int32).long()) // 2
    return bits.to(torch.int32).view(torch.float32)


class _Bracket:
    """Per problem: count_ge(low) >= k > count_ge(high), and each column's first positions >= both."""

    def __init__(self, problems: SortedProblems, k: torch.Tensor):
        order = problems.order
        n, columns, length = problems.count, order.columns, order.length
        device = order.values.device
        self.problems, self.k, self.length = problems, k, length
        everyone = torch.arange(n, device=device)
        # Every value is >= 0, so low = 0 counts every entry.
        self.low = torch.zeros(n, device=device)
        self.low_pos = torch.zeros(n, columns, dtype=torch.long, device=device)
        self.low_count = torch.full((n,), columns * length, dtype=torch.long, device=device)
        last = torch.full((n, columns), length - 1, dtype=torch.long, device=device)
        top = problems.evaluate(everyone.unsqueeze(1).expand(n, columns), order.grid_cols(n), last)
        self.high = _next_up(top.amax(dim=1))
        self.high_pos = torch.full((n, columns), length, dtype=torch.long, device=device)
        self.high_count = torch.zeros(n, dtype=torch.long, device=device)

    def probe(self, which: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Count the entries >= value for the listed problems, tighten their brackets, return the counts."""
        value = torch.minimum(torch.maximum(value, self.low[which]), self.high[which])
        pos = self.problems.first_reaching(which, value, False, self.low_pos[which], self.high_pos[which])
        count = (self.length - pos).sum(dim=1)
        reaching = count >= self.k[which]
        raise_low = reaching & (value > self.low[which])
        lower_high = ~reaching & (value < self.high[which])
        for mask, (val, positions, counts) in (
            (raise_low, (self.low, self.low_pos, self.low_count)),
            (lower_high, (self.high, self.high_pos, self.high_count)),
        ):
            rows = which[mask]
            val[rows] = value[mask]
            positions[rows] = pos[mask]
            counts[rows] = count[mask]
        return count

    def inside(self) -> torch.Tensor:
        return self.low_count - self.high_count

    def closed(self) -> torch.Tensor:
        """No float lies strictly between low and high: the k-th largest is low itself."""
        return self.high <= _next_up(self.low)


@ieee_subnormals
def kth_largest_in_columns(
    problems: SortedProblems, k: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per problem the k-th largest value (k: one int, or one per problem), and per column the
    first sorted position whose value is >= it and the first whose value is > it."""
    order = problems.order
    device = order.values.device
    k = torch.as_tensor(k, dtype=torch.long, device=device).expand(problems.count).clone()
    if bool(((k < 1) | (k > order.columns * order.length)).any()):
        raise ValueError(f"k must lie in 1..{order.columns * order.length}, got {k.tolist()}")
    bracket = _Bracket(problems, k)
    _first_guess(problems, bracket, k)
    _narrow(bracket, k)
    # Where no float lies between low and high, the answer is low: its entries start at
    # low_pos and those above it at high_pos. Elsewhere the few entries inside are ranked.
    value, at_least, above = bracket.low.clone(), bracket.low_pos.clone(), bracket.high_pos.clone()
    pending = torch.nonzero(~bracket.closed()).reshape(-1)
    if pending.numel():
        value[pending], at_least[pending], above[pending] = _rank_inside(problems, bracket, pending, k)
    return value, at_least, above


def _first_guess(problems: SortedProblems, bracket: _Bracket, k: torch.Tensor) -> None:
    """Two probes read off a random sample of entries: one where the sample puts the k-th
    largest, one moved by the error the first one turned out to have (plus a margin)."""
    order = problems.order
    m = order.sample_cols.numel()
    everyone = torch.arange(problems.count, device=k.device)
    sample = problems.evaluate(
        everyone.unsqueeze(1).expand(problems.count, m),
        order.sample_cols.expand(problems.count, m),
        order.sample_pos.expand(problems.count, m),
    )
    sample = torch.sort(sample, dim=1, descending=True).values
    per_rank = order.columns * order.length / m  # entries one sample rank stands for
    expected = (k.double() / per_rank).floor().long().clamp(0, m - 1)
    count = bracket.probe(everyone, sample[everyone, expected])
    # Move by the first probe's error (in sample ranks) and a margin past k, to cross it.
    error = (count - k).double() / per_rank
    margin = 2.0 * torch.sqrt(error.abs() + 1.0) + 1.0
    second = (expected - error - margin * torch.sign(error)).round().long().clamp(0, m - 1)
    bracket.probe(everyone, sample[everyone, second])


def _narrow(bracket: _Bracket, k: torch.Tensor) -> None:
    """Interpolate inside each bracket (two probes aimed just above and below k) until it holds
    at most BUDGET entries or no float lies inside; bit midpoints take over where that stalls."""
    previous = None
    for _ in range(_MAX_ROUNDS):
        inside = bracket.inside()
        active = (inside > BUDGET) & ~bracket.closed()
        if not bool(active.any()):
            return
        which = torch.nonzero(active).reshape(-1)
        stalled = torch.zeros_like(which, dtype=torch.bool) if previous is None else inside[which] * 2 > previous[which]
        previous = inside.clone()
        margin = torch.clamp(inside[which].double() / 32, min=BUDGET / 4)
        for target in (k[which] + margin, k[which] - margin):
            low, high = bracket.low[which], bracket.high[which]
            share = ((bracket.low_count[which] - target) / bracket.inside()[which].double()).clamp(0, 1)
            guess = (low.double() + share * (high.double() - low.double())).float()
            usable = (guess > low) & (guess < high) & ~stalled
            guess = torch.where(usable, guess, _bit_midpoint(low, high))
            open_ = high > _next_up(low)
            if bool(open_.any()):
                bracket.probe(which[open_], guess[open_])
    raise RuntimeError("the k-th largest search did not converge")  # unreachable: bit midpoints halve


def ragged(low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (row of low, column, position) with low <= position < high, in that order."""
    columns = low.shape[1]
    lengths = (high - low).clamp(min=0).reshape(-1)
    segment = torch.repeat_interleave(torch.arange(lengths.numel(), device=low.device), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    pos = low.reshape(-1)[segment] + torch.arange(segment.numel(), device=low.device) - starts[segment]
    return segment // columns, segment % columns, pos


def _rank_inside(problems: SortedProblems, bracket: _Bracket, which: torch.Tensor, k: torch.Tensor):
    """The (k - count above the bracket)-th largest of the few entries inside each bracket, and
    per column the first positions >= and > it (the entries inside are sorted per column)."""
    low_pos = bracket.low_pos[which]
    local, col, pos = ragged(low_pos, bracket.high_pos[which])
    values = problems.evaluate(which[local], col, pos)
    keys = torch.sort(local * 2**32 + values.view(torch.int32).long()).values  # values >= 0: bits order
    ends = torch.cumsum(torch.bincount(local, minlength=which.numel()), 0)
    picked = keys[ends - (k[which] - bracket.high_count[which])]
    found = (picked & 0xFFFFFFFF).to(torch.int32).view(torch.float32)
    segment, cells = local * low_pos.shape[1] + col, low_pos.numel()
    below = torch.bincount(segment, weights=(values < found[local]).float(), minlength=cells)
    not_above = torch.bincount(segment, weights=(values <= found[local]).float(), minlength=cells)
    return found, low_pos + below.long().view_as(low_pos), low_pos + not_above.long().view_as(low_pos)
