"""Decoy fill: pruned weights that leave no map in a baked file.

A baked mask writes exact zeros, and a trained layer has almost none of its own: the file
shows anyone where the mask was, and the entries can then be refilled (matrix completion
from the rest of the layer, bench/digits/attacks/refill.py). The decoy fill writes, in each
pruned entry, a value drawn at random from the KEPT weights of the same row. The row's values
keep their distribution, so no entry stands out by its value, and what is written is
independent of the weight that stood there: none of the pruned weight comes back.

The draw is seeded per layer (the seed and the layer's name), so a streamed bake gives the
same file whatever order the layers come in. The seed is not stored: with it and the
algorithm, the draws could be replayed to find the entries.
"""

from __future__ import annotations

import secrets
import zlib

import torch

from .errors import InvalidInputError

FILLS = ("zeros", "decoys")


def check_fill(fill: str, strength: float) -> str:
    if fill not in FILLS:
        raise InvalidInputError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
    if fill == "decoys" and strength != 1.0:
        raise InvalidInputError("the decoy fill replaces pruned weights outright; it needs strength 1")
    return fill


def fill_seed(seed: int | None) -> int:
    """``seed``, or a fresh random one (the default: nobody, the baker included, can replay it)."""
    return secrets.randbits(63) if seed is None else int(seed)


def layer_generator(seed: int, layer: str) -> torch.Generator:
    return torch.Generator().manual_seed((seed + zlib.crc32(layer.encode())) % (2**63))


def decoy_weight(weight: torch.Tensor, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A copy of the 2-D ``weight`` whose flat ``indices`` hold values drawn from the kept entries of their row.

    A row pruned entirely draws from the kept entries of the whole layer; a layer pruned
    entirely is left at zero (there is nothing to draw from).
    """
    out = weight.detach().clone()
    if not indices.numel():
        return out
    rows, cols = out.shape
    flat = out.view(-1)
    index = indices.to(torch.long)
    pruned = torch.zeros(rows * cols, dtype=torch.bool)
    pruned[index] = True
    pruned = pruned.view(rows, cols)
    kept_per_row = (~pruned).sum(dim=1)
    # per row, the kept columns first (a stable sort keeps them in column order)
    order = torch.argsort(pruned.to(torch.int8), dim=1, stable=True)
    row_of = index // cols
    draws = torch.rand(index.numel(), generator=generator, dtype=torch.float64)
    counts = kept_per_row[row_of]
    pick = (draws * counts.clamp_min(1)).long().clamp_max(counts.clamp_min(1) - 1)
    values = out[row_of, order[row_of, pick]]
    empty = counts == 0
    if bool(empty.any()):
        kept = out[~pruned]
        if kept.numel():
            spare = torch.randint(kept.numel(), (int(empty.sum()),), generator=generator)
            values[empty] = kept[spare]
        else:
            values[empty] = 0
    flat[index] = values
    return out
