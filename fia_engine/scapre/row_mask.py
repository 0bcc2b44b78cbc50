"""The information-based soft row mask (ScaPre switch ``row_mask``).

Output row i of a projection W responds r_i(e) = W[i] . e to a token embedding e. Over the
concept token rows (label 1) and the empty / anchor rows (label 0), each row's responses
are binarised at that row's median; the plug-in mutual information between the bit and
the label says how much the row tells concept from no concept. The informations are
standardised across the layer's rows (z-score), squashed by a sigmoid at temperature T and
raised to the power p:

    m_i = sigmoid(z_i / T)^p

How the mask enters the edit (settings.mask_form) is compute.py's business: "target" scales
each row's target inside the least squares, as the authors' release does; "confine"
scales each row's update, D <- diag(m) D.
"""

from __future__ import annotations

import torch


def row_mutual_information(responses: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Plug-in I(bit; label) in nats per row of ``responses`` (rows x samples), bit = above the row median."""
    bits = responses > responses.quantile(0.5, dim=1, keepdim=True)
    label = labels.to(torch.bool).unsqueeze(0)
    cells = (~bits & ~label, ~bits & label, bits & ~label, bits & label)  # (bit, label) = 00, 01, 10, 11
    joint = torch.stack([cell.sum(1) for cell in cells], dim=1).to(responses.dtype) / responses.shape[1]
    bit_marginal = torch.stack([joint[:, 0] + joint[:, 1], joint[:, 2] + joint[:, 3]], dim=1)
    label_marginal = torch.stack([joint[:, 0] + joint[:, 2], joint[:, 1] + joint[:, 3]], dim=1)
    # I = H(bit) + H(label) - H(bit, label); xlogy keeps 0 log 0 = 0
    return _entropy(bit_marginal) + _entropy(label_marginal) - _entropy(joint)


def _entropy(probabilities: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(probabilities, probabilities).sum(1)


def soft_row_mask(information: torch.Tensor, power: float, temperature: float = 1.0) -> torch.Tensor:
    """sigmoid(z-score of the informations / temperature) ^ power; all rows 0.5^power when they are all alike."""
    spread = information.std(unbiased=False)
    if float(spread) <= 1e-12 * max(1.0, float(information.abs().max())):
        z = torch.zeros_like(information)
    else:
        z = (information - information.mean()) / spread
    return torch.sigmoid(z / temperature).pow(power)


def information_row_mask(
    weight: torch.Tensor, concepts: torch.Tensor, references: torch.Tensor, power: float, temperature: float = 1.0
) -> torch.Tensor:
    """The row mask (d_out,) of W from concept rows (label 1) and empty/anchor rows (label 0)."""
    tokens = torch.cat([concepts, references])
    labels = torch.cat(
        [
            torch.ones(len(concepts), dtype=torch.bool, device=tokens.device),
            torch.zeros(len(references), dtype=torch.bool, device=tokens.device),
        ]
    )
    return soft_row_mask(row_mutual_information(weight @ tokens.T, labels), power, temperature)


def concept_row_masks(
    weight: torch.Tensor,
    concepts: torch.Tensor,
    references: torch.Tensor,
    owners: torch.Tensor,
    power: float,
    temperature: float,
) -> torch.Tensor:
    """One row mask per concept (concepts x d_out), as the release makes one per concept.

    ``owners`` (n,) numbers each concept row's concept 0..C-1. Where the references are
    aligned with the concept rows (one empty row per concept row, the usual case) a
    concept is contrasted with the references at its own positions, else with all of them.
    """
    aligned = len(references) == len(concepts)
    masks = []
    for concept in range(int(owners.max()) + 1):
        rows = owners == concept
        negatives = references[rows] if aligned else references
        masks.append(information_row_mask(weight, concepts[rows], negatives, power, temperature))
    return torch.stack(masks)
