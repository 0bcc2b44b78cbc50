"""compute_edit: the whole ScaPre pipeline over a set of to_k / to_v weights.

Per call (shared by all layers): spectral weighting of the concept rows, the system matrix M
and its Cholesky solve (solve.py). Per layer: the row masks (one per concept), the
closed-form delta with the masks on its targets (or the Sylvester solve when the
output-space regulariser is on), the Bures step, the entropy blend, and compaction into
low-rank or dense storage. Works on the weights' device in float32 (float64
if the weights are float64) and never writes into the weights or token tensors it is given.
"""

from __future__ import annotations

import logging
import time

import torch

from ..errors import InvalidInputError
from ..layers import family_of, shape_fingerprint
from .delta import LayerDelta
from .edit import ScaPreEdit
from .geometry import blend_factors, bures_step, release_bures, row_response_entropy
from .layers import weight_mean_abs
from .row_mask import concept_row_masks
from .settings import ScaPreSettings
from .solve import build_system
from .spectral import check_concept_ids, release_residual, spectral_weighting
from .sylvester import SymmetricEigen, output_gram, solve_sylvester

logger = logging.getLogger(__name__)


def compute_edit(
    weights: dict[str, torch.Tensor],
    concept_tokens: torch.Tensor,
    anchor_tokens: torch.Tensor,
    preserve_tokens: torch.Tensor | None,
    settings: ScaPreSettings | None = None,
    empty_tokens: torch.Tensor | None = None,
    metadata: dict | None = None,
    concept_ids: torch.Tensor | None = None,
) -> ScaPreEdit:
    """The ScaPre edit of ``weights`` (canonical name -> original W, d_out x d_in).

    concept_tokens (n x d_in) are mapped onto the outputs the original weights give
    anchor_tokens (n x d_in, the same token positions); preserve_tokens (m x d_in) keep their
    outputs; empty_tokens (the empty prompt's rows) label the row mask's "no concept" side
    and default to the anchor rows. concept_ids (n,) says which concept each concept row
    belongs to (tokens.row_owners); the spectral step measures its cap in one concept's own
    energy and the row mask is made per concept. Without it every row counts as a concept
    of its own for the spectral step, and the row mask is made once over all rows (one
    token row against one empty row carries no information).
    """
    settings = (settings or ScaPreSettings()).validate()
    width = _check_weights(weights)
    first = next(iter(weights.values()))
    work = torch.float64 if any(w.dtype == torch.float64 for w in weights.values()) else torch.float32
    place = {"device": first.device, "dtype": work}
    concepts = _tokens("concept", concept_tokens, width, required=True).to(**place)
    anchors = _tokens("anchor", anchor_tokens, width, required=True).to(**place)
    if anchors.shape != concepts.shape:
        raise InvalidInputError(
            f"anchor token rows {tuple(anchors.shape)} must match the concept rows {tuple(concepts.shape)} "
            "(the anchor taken at the concept's token positions)"
        )
    masks_per_concept = concept_ids is not None
    concept_ids = check_concept_ids(concept_ids, len(concepts))
    preserve = _tokens("preserve", preserve_tokens, width).to(**place)
    empty = _tokens("empty", empty_tokens, width)
    references = empty.to(**place) if empty.numel() else anchors
    active = settings.active
    started = time.perf_counter()

    capped = active["spectral"] and settings.spectral_form == "cap"
    weighting = spectral_weighting(concepts, settings.spectral_rho, concept_ids) if capped else None
    system = build_system(concepts, anchors, preserve, settings.preserve_weight, settings.ridge, weighting)
    residual = residual_down = None
    if active["spectral"] and not capped:
        residual = release_residual(concepts, settings.spectral_temperature, settings.spectral_power)
        residual_down = system.times_inverse(residual)
    gram_eigen = SymmetricEigen.of(system.gram) if active["sylvester"] else None
    owners = torch.zeros(len(concepts), dtype=torch.long, device=concepts.device)
    if masks_per_concept:
        owners = torch.unique(concept_ids.to(concepts.device), return_inverse=True)[1]
    layers, stats = {}, {}
    for name, weight in weights.items():
        w = weight.detach().to(**place)
        layer_stats = {"weight_norm": float(w.norm())}
        masks = target_scale = entropy = None
        if active["entropy_blend"] or (active["bures"] and settings.bures_form == "release"):
            entropy = row_response_entropy(w, concepts, settings.entropy_bins)  # shared by both steps
        if active["row_mask"]:
            masks = concept_row_masks(w, concepts, references, owners, settings.mask_power, settings.mask_temperature)
            layer_stats["mask_mean"] = float(masks.mean())
            if settings.mask_form == "target":
                target_scale = masks[owners].T  # (d_out, n): each token row takes its concept's mask
        if gram_eigen is not None:
            regulariser = settings.output_reg * output_gram(w, preserve if preserve.numel() else references)
            delta = LayerDelta.full(solve_sylvester(regulariser, gram_eigen, system.rhs(w, target_scale)))
        else:
            delta = LayerDelta.low_rank(system.up(w, target_scale), system.down)
        if residual is not None:
            delta = delta.plus(LayerDelta.low_rank(-settings.spectral_scale * (w @ residual.T), residual_down))
        if masks is not None and settings.mask_form == "confine":
            delta = delta.scale_rows(masks.max(0).values)  # a row any concept needs keeps its update
        if active["bures"] and settings.bures_form == "release":
            mu = float(entropy.mean())
            edited = release_bures(w + delta.to_dense(), w, mu, settings.ridge, settings.bures_iters)
            delta, layer_stats["bures_mu"] = LayerDelta.full(edited - w), mu
        elif active["bures"]:
            delta, layer_stats["flipped_rows"] = bures_step(delta, w, settings.bures_eta)
        if active["entropy_blend"]:
            alpha = blend_factors(entropy, settings.blend_floor)
            layer_stats["blend_mean"] = float(alpha.mean())
            delta = delta.scale_rows(alpha)
        layers[name] = delta.compact(settings.rank_tol).to("cpu", torch.float32)
        stats[name] = layer_stats
    elapsed = time.perf_counter() - started
    logger.info(
        "ScaPre (%s): %d layers, %d concept rows, %d preserve rows, %.3f s",
        settings.mode,
        len(layers),
        len(concepts),
        len(preserve),
        elapsed,
    )
    shapes = {name: (int(w.shape[0]), int(w.shape[1])) for name, w in weights.items()}
    info = dict(metadata or {})
    info.update(
        method="ScaPre",
        settings=settings.to_dict(),
        active=active,
        token_rows={"concept": len(concepts), "preserve": len(preserve), "empty": len(empty)},
        layer_stats=stats,
        seconds=round(elapsed, 4),
    )
    return ScaPreEdit(
        layers=layers,
        shapes=shapes,
        family=info.get("family") or family_of(width),
        fingerprint=shape_fingerprint(shapes),
        weight_signature={name: weight_mean_abs(w) for name, w in weights.items()},
        metadata=info,
    )


def _check_weights(weights: dict[str, torch.Tensor]) -> int:
    if not weights:
        raise InvalidInputError("no weights given: pass canonical name -> to_k / to_v weight of the original model")
    widths = set()
    for name, weight in weights.items():
        if weight.dim() != 2:
            raise InvalidInputError(f"weight {name!r} must be a 2-D (d_out x d_in) matrix, got {tuple(weight.shape)}")
        widths.add(int(weight.shape[1]))
    if len(widths) != 1:
        raise InvalidInputError(f"all weights must take inputs of one width (the text embedding), got {sorted(widths)}")
    return widths.pop()


def _tokens(what: str, tokens: torch.Tensor | None, width: int, required: bool = False) -> torch.Tensor:
    if tokens is None:
        tokens = torch.zeros(0, width)
    if tokens.dim() != 2 or tokens.shape[1] != width:
        raise InvalidInputError(f"{what} token rows must be (rows, {width}), got shape {tuple(tokens.shape)}")
    if required and tokens.shape[0] == 0:
        raise InvalidInputError(f"no {what} token rows: give at least one {what} token")
    if not bool(torch.isfinite(tokens).all()):
        raise InvalidInputError(f"{what} token rows hold NaN or infinite values")
    return tokens.detach()
