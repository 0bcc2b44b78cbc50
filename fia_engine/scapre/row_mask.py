"""The information-based soft row mask (ScaPre switch ``row_mask``).

Output row i of a projection W responds r_i(e) = W[i] . e to a token embedding e. Over the
concept token rows (label 1) and the empty / anchor rows (label 0), each row's responses
are binarised at that row's median; the plug-in mutual information between the bit and
the label says how much the row tells concept from no concept. The informations are
standardised across the layer's rows (z-score), squashed by a sigmoid and raised to the
power p:

    m_i = sigmoid(z_i)^p

Applied as D <- diag(m) D, the edit stays in the concept-relevant rows (and low rank).
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


def soft_row_mask(information: torch.Tensor, power: float) -> torch.Tensor:
    """sigmoid(z-score of the informations) ^ power; all rows 0.5^power when they are all alike."""
    spread = information.std(unbiased=False)
    if float(spread) <= 1e-12 * max(1.0, float(information.abs().max())):
        z = torch.zeros_like(information)
    else:
        z = (information - information.mean()) / spread
    return torch.sigmoid(z).pow(power)


def information_row_mask(
    weight: torch.Tensor, concepts: torch.Tensor, references: torch.Tensor, power: float
) -> torch.Tensor:
    """The row mask (d_out,) of W from concept rows (label 1) and empty/anchor rows (label 0)."""
    tokens = torch.cat([concepts, references])
    labels = torch.cat(
        [
            torch.ones(len(concepts), dtype=torch.bool, device=tokens.device),
            torch.zeros(len(references), dtype=torch.bool, device=tokens.device),
        ]
    )
    return soft_row_mask(row_mutual_information(weight @ tokens.T, labels), power)
