"""Exact order statistics on weight-sized tensors, without torch.kthvalue, and the top list
from which every r2's selection is read.

torch.kthvalue copies and quick-selects a multi-million-element slice (slow on a CPU, and a
slow path on CUDA); the FIA stages need many such ranks. What is here gives the same
numbers: the k-th largest value of a multiset is unique, whatever finds it.

Ties at a top-k boundary are broken by the lower flat index ("stable" top-k): the result is
then a function of the values alone, where torch.topk leaves the choice to its algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

_INT32_MAX = 2**31 - 1


def kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest entry of ``values`` (1 <= k <= numel), as a 0-d tensor on its device."""
    flat = values.reshape(-1)
    if not 1 <= k <= flat.numel():
        raise ValueError(f"k={k} is outside 1..{flat.numel()}")
    if flat.device.type == "cpu" and flat.dtype == torch.float32:
        return _kth_largest_numpy(flat.detach().numpy(), k)
    if flat.dtype == torch.float32 and bool((flat >= 0).all()):
        return radix_kth_largest(flat, k)
    return torch.topk(flat, k, sorted=False).values.min()


def _kth_largest_numpy(values: np.ndarray, k: int) -> torch.Tensor:
    """numpy's introselect, on the positive entries only when none is negative.

    FIA's saliency is mostly exact zeros (relu of a contrast), and introselect slows down by
    tens of times on many equal values (810 ms against 18 ms on 6.5 M entries, 90 % zeros).
    With no negative entry, the k-th largest is 0 when fewer than k entries are positive, and
    otherwise the k-th largest of the positive ones: the same value.
    """
    if values.size and values.min() >= 0:
        positive = values[values > 0]
        if positive.size < k:
            return torch.tensor(0.0, dtype=torch.float32)
        values = positive
    position = values.size - k
    return torch.tensor(np.partition(values, position)[position])


_RADIX_PASSES = ((20, 11), (10, 10), (0, 10))  # (shift, bits) of a non-negative float's 31 bits


def radix_kth_largest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest of non-negative float32 values by three histogram passes over their
    bit patterns (which order like the values): exact, and a few fast kernels on a GPU where
    topk / kthvalue of a multi-million-element slice are slow."""
    bits = flat.view(torch.int32) & _INT32_MAX  # -0.0 counts as +0.0
    prefix, prefix_bits = 0, 0  # the high bits of the answer found so far
    weight_type = torch.float32 if flat.numel() < 2**24 else torch.float64  # counts exact in floats
    for shift, width in _RADIX_PASSES:
        digit = (bits >> shift) & ((1 << width) - 1)
        if prefix_bits:
            matches = ((bits >> (shift + width)) == prefix).to(weight_type)
            counts = torch.bincount(digit, weights=matches, minlength=1 << width).round().long()
        else:
            counts = torch.bincount(digit, minlength=1 << width)
        above = torch.flip(torch.cumsum(torch.flip(counts, [0]), 0), [0])  # entries with digit >= d
        chosen = int(torch.nonzero(above >= k).max())  # the largest digit reaching k
        k -= int(above[chosen]) - int(counts[chosen])  # entries with a larger digit come first
        prefix, prefix_bits = (prefix << width) | chosen, prefix_bits + width
    return torch.tensor(prefix, dtype=torch.int32, device=flat.device).view(torch.float32)


def stable_top_indices(values: torch.Tensor, k: int) -> torch.Tensor:
    """Flat indices of the k largest entries, ties taken at the lowest index; ascending."""
    flat = values.reshape(-1)
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=flat.device)
    if k >= flat.numel():
        return torch.arange(flat.numel(), device=flat.device)
    boundary = kth_largest(flat, k).to(flat.device)
    above = torch.nonzero(flat > boundary).reshape(-1)
    tied = torch.nonzero(flat == boundary).reshape(-1)[: k - above.numel()]  # nonzero is ascending
    return torch.sort(torch.cat([above, tied])).values


def sort_integers(keys: torch.Tensor) -> torch.Tensor:
    """Ascending sort of non-negative integers (numpy's vectorised sort on a CPU, torch elsewhere)."""
    if keys.device.type != "cpu" or not keys.numel():
        return torch.sort(keys).values
    narrow = int(keys.max()) < 2**31  # 32-bit keys sort about twice as fast
    array = keys.numpy().astype(np.int32 if narrow else np.int64)
    array.sort()
    return torch.from_numpy(array).to(keys.dtype)


@dataclass
class TopList:
    """The ``count`` largest entries of one (rows x columns) non-negative matrix, in the stable
    top-k order, zeros left out (Q never takes them).

    ``flat`` holds their flat indices ordered by value descending, then flat index ascending;
    ``values`` their values; ``row_rank`` how many entries of the same row come before each
    one in that order. Within a row this order is value descending, then column ascending, so
    for a prefix G of the list (a stable top-k) an entry's row rank inside G equals its rank
    in its whole row: Q = G ∩ (row top-k) ∩ (value > 0) reads off the list for any k <= count
    without looking at the matrix again.
    """

    flat: torch.Tensor
    values: torch.Tensor
    row_rank: torch.Tensor
    columns: int
    count: int

    @classmethod
    def of(cls, flat: torch.Tensor, values: torch.Tensor, columns: int, count: int) -> TopList:
        """From the entries of a stable top-``count`` set (any order, zeros may be left out),
        their values and the matrix width."""
        groups = torch.zeros_like(flat, dtype=torch.long)
        return cls.many(groups, flat, values, columns, [count])[0]

    @classmethod
    def many(
        cls, groups: torch.Tensor, flat: torch.Tensor, values: torch.Tensor, columns: int, counts: list[int]
    ) -> list[TopList]:
        """One TopList per group (0..len(counts)-1) of a matrix ``columns`` wide, from the entries
        of each group's stable top-``counts[group]`` set, in any order."""
        if bool((values <= 0).any()):
            positive = values > 0
            groups, flat, values = groups[positive], flat[positive], values[positive]
        device = flat.device
        if not flat.numel():
            empty = torch.empty(0, dtype=torch.long, device=device)
            return [cls(empty, values.float(), empty, columns, count) for count in counts]
        flat_bits = max(1, int(flat.max()).bit_length())
        group_bits = max(1, (len(counts) - 1).bit_length())
        if group_bits + 31 + flat_bits > 63:  # too wide for one key: one group at a time
            return [cls.of(flat[groups == g], values[groups == g], columns, count) for g, count in enumerate(counts)]
        # One sort of one int64 key: group, value descending, flat index ascending.
        keys = groups.long() << 31
        keys |= _descending_key(values)
        keys <<= flat_bits
        keys |= flat
        keys = torch.sort(keys).values
        flat = keys & ((1 << flat_bits) - 1)
        keys >>= flat_bits
        values = (_INT32_MAX - (keys & _INT32_MAX)).to(torch.int32).view(torch.float32)
        groups = (keys >> 31).to(torch.int32)
        # Row rank: position among the entries of the same (group, row), in list order.
        rows_per_group = int(flat.max()) // columns + 1
        row_key = (flat // columns).to(torch.int32)
        row_key += groups * rows_per_group
        by_row = torch.sort(row_key, stable=True).indices
        _, run = torch.unique_consecutive(row_key[by_row], return_counts=True)
        first = torch.repeat_interleave(torch.cumsum(run, 0) - run, run)
        row_rank = torch.empty_like(first)
        row_rank[by_row] = torch.arange(first.numel(), device=device) - first
        sizes = torch.bincount(groups, minlength=len(counts)).tolist()
        parts = zip(*(torch.split(t, sizes) for t in (flat, values, row_rank)), strict=True)
        return [cls(f, v, r, columns, count) for (f, v, r), count in zip(parts, counts, strict=True)]

    def select(self, k_global: int, k_row: int) -> torch.Tensor:
        """Q: sorted flat indices of the first k_global entries that are in their row's top k_row
        (the zeros among them are not stored, so never taken)."""
        if k_global > self.count:
            raise ValueError(f"the top list stands for {self.count} entries, {k_global} asked for")
        keep = self.row_rank[:k_global] < k_row
        return sort_integers(self.flat[:k_global][keep])


def _descending_key(values: torch.Tensor) -> torch.Tensor:
    """An integer key that sorts non-negative float32 values in descending order."""
    return _INT32_MAX - (values.float() + 0.0).view(torch.int32).long()  # + 0.0 turns -0.0 into +0.0


def dense_top_list(matrix: torch.Tensor, count: int) -> TopList:
    """The TopList of the ``count`` largest entries of a dense matrix."""
    flat = stable_top_indices(matrix, count)
    return TopList.of(flat, matrix.reshape(-1)[flat].float(), matrix.shape[1], count)
