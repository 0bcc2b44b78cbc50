"""Which token positions of a prompt's text embeddings ScaPre edits.

The cross-attention keys and values see every position of the padded prompt. ScaPre maps
the positions that carry the concept: 1 .. length-1, i.e. the concept's word tokens and
the end-of-text token (which, in a causal CLIP encoder, has read the whole prompt and
carries it). Position 0, the start token, is skipped: with a causal encoder it has seen
nothing yet, so it is the same vector for every prompt and editing it would change every
image. The padding after the end token is left alone as well (docs/scapre.md).
"""

from __future__ import annotations

import torch

from ..errors import InvalidInputError


def select_token_rows(embeddings: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Stack positions 1 .. lengths[p]-1 of each prompt p: (P, T, d) -> (sum(lengths) - P, d).

    ``lengths[p]`` counts the prompt's real tokens, start and end token included (the sum of
    its attention mask). A new tensor is returned; ``embeddings`` is not modified.
    """
    if embeddings.dim() != 3:
        raise InvalidInputError(
            f"token embeddings must be (prompts, tokens, width), got shape {tuple(embeddings.shape)}"
        )
    prompts, tokens, _ = embeddings.shape
    if len(lengths) != prompts:
        raise InvalidInputError(f"got {len(lengths)} token lengths for {prompts} prompts; give one per prompt")
    for length in lengths:
        if not 2 <= int(length) <= tokens:
            raise InvalidInputError(
                f"a prompt length must count at least the start and end token and at most {tokens}, got {length}"
            )
    return torch.cat([embeddings[p, 1 : int(length)] for p, length in enumerate(lengths)])


def rows_at_positions(embedding: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """One prompt's embeddings (T, d) or (1, T, d), taken at the positions of other prompts.

    Gives the anchor's (or the empty prompt's) rows aligned with the concept rows that
    select_token_rows(concepts, lengths) returns: row k of both is the same position.
    """
    single = embedding if embedding.dim() == 2 else embedding.squeeze(0)
    if single.dim() != 2:
        raise InvalidInputError(f"expected one prompt's embeddings (tokens, width), got shape {tuple(embedding.shape)}")
    return select_token_rows(single.unsqueeze(0).expand(len(lengths), -1, -1), lengths)


def row_owners(lengths: list[int]) -> torch.Tensor:
    """For the rows select_token_rows(embeddings, lengths) returns: the index of each row's prompt."""
    counts = torch.tensor([int(length) - 1 for length in lengths])
    return torch.repeat_interleave(torch.arange(len(lengths)), counts)
