"""Stage 1 of FIA: contrastive concept saliency, collected by forward hooks on the FFN2 layers.

Per prompt sample, with X the layer input (tokens x C_in) and Y its output (tokens x C_out):

    exact:  U[i,j] = |W[i,j]| * ||X_j|| * |<X_j, Y_i>| / (||X_j|| * ||Y_i|| + eps)
    fast:   U[i,j] = |W[i,j]| * ||X^_j||   with every token row of X L2-normalised first

    S_t[i,j] = max(0, mean_concept U - mean_base U - std_base U)

|W| is the same for every sample, so it is factored out of mean and std: fast mode keeps
only C_in-sized column statistics per (step, group), exact mode keeps the per-step sums of
V = U / |W| (weight-sized, per group) and folds each finished step into the running time
integral of Stage 2, so r1 is fixed at collection there. std is the sample standard
deviation (n - 1), and 0 for a single sample. Everything stays on the model's device, in fp32.

The host (diffusers runner, ComfyUI node) drives the denoising. Before each UNet call it
says which step this is (`set_step`) and which saliency group each batch row belongs to
(`set_rows`, -1 = not observed, e.g. the unconditional rows of classifier-free guidance).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from .errors import InvalidInputError
from .layers import TargetLayer, UNetTargets, weight_signature
from .localize import StepIntegrator, check_ratio

logger = logging.getLogger(__name__)

MODES = ("fast", "exact")
# Upper bound for the per-chunk temporaries of one hook call (exact mode builds one
# C_out x C_in matrix per sample; fast mode one fp32 copy of the activations).
_CHUNK_BYTES = 256 * 2**20


@dataclass(frozen=True)
class GroupPlan:
    """Which saliency group holds each concept's samples and each concept's base samples.

    Concepts whose base prompts are identical share one base group, so the base samples are
    run once for all of them.
    """

    concepts: tuple[str, ...]
    concept_groups: tuple[int, ...]
    base_groups: tuple[int, ...]

    def __post_init__(self):
        if not self.concepts:
            raise InvalidInputError("the concept list is empty: give at least one concept to unlearn")
        if not len(self.concepts) == len(self.concept_groups) == len(self.base_groups):
            raise InvalidInputError("concepts, concept_groups and base_groups must have one entry per concept")
        overlap = set(self.concept_groups) & set(self.base_groups)
        if overlap or len(set(self.concept_groups)) != len(self.concepts):
            raise InvalidInputError("every concept needs a group of its own, apart from all base groups")

    @property
    def num_groups(self) -> int:
        return max(self.concept_groups + self.base_groups) + 1


@dataclass
class ColumnContrast:
    """The terms of fast mode's column contrast, each (concepts, steps, C_in): kept so that other
    contrasts can be compared with the paper's on one collection (bench saliency-check)."""

    concept_mean: torch.Tensor
    base_mean: torch.Tensor
    base_std: torch.Tensor


@dataclass
class LayerSaliency:
    """What Stage 2 needs of one layer.

    fast:  column_scores (concepts, steps, C_in) = relu(mean_c - mean_b - std_b) of the column
           norms, and weight_abs = |W|, so S_t = weight_abs * column_scores[c, t]; contrast holds
           the three terms when the collector was asked to keep them (three times the memory
           of column_scores, so off by default).
    exact: integrated (concepts, C_out, C_in) = A, already time-integrated with r1.
    """

    column_scores: torch.Tensor | None = None
    weight_abs: torch.Tensor | None = None
    integrated: torch.Tensor | None = None
    contrast: ColumnContrast | None = None


@dataclass
class ConceptSaliency:
    """Output of a collection: per concept and layer, everything Neuron Localization needs."""

    concepts: tuple[str, ...]
    mode: str
    family: str
    shapes: dict[str, tuple[int, int]]
    fingerprint: str
    weight_signature: dict[str, float]
    layers: dict[str, LayerSaliency]
    steps: tuple[int, ...]
    r1: float | None = None
    settings: dict = field(default_factory=dict)
    # What localisation derived from this collection and may reuse (neurons.py): it depends on
    # nothing but the collection and r1, so a change of r2 or alpha reuses it.
    cache: dict = field(default_factory=dict, repr=False, compare=False)


def _std(total: torch.Tensor, squares: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Sample standard deviation from sums; 0 where fewer than two samples were seen."""
    count = count.clamp(min=1)
    variance = (squares - total * total / count) / (count - 1).clamp(min=1)
    return variance.clamp(min=0).sqrt() * (count > 1)


def _chunks(rows: int, bytes_per_row: int):
    step = max(1, _CHUNK_BYTES // max(1, bytes_per_row))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


class _LayerStats:
    """Running sums for one layer: per step for fast mode, for the current step for exact mode."""

    def __init__(
        self, layer: TargetLayer, plan: GroupPlan, num_steps: int, mode: str, r1: float | None, keep_contrast: bool
    ):
        self.layer = layer
        self.plan = plan
        self.mode = mode
        self.keep_contrast = keep_contrast
        weight = layer.module.weight
        device, groups = weight.device, plan.num_groups
        c_out, c_in = layer.shape
        self.weight = weight  # reference only, refreshed by every hook call
        if mode == "fast":
            self.sums = torch.zeros(num_steps, groups, c_in, device=device)
            self.squares = torch.zeros_like(self.sums)
            self.counts = torch.zeros(num_steps, groups, 1, device=device)
        else:
            base = sorted(set(plan.base_groups))
            self.square_slot = torch.full((groups,), -1, dtype=torch.long, device=device)
            self.square_slot[base] = torch.arange(len(base), device=device)
            self.sums = torch.zeros(groups, c_out, c_in, device=device)
            self.squares = torch.zeros(len(base), c_out, c_in, device=device)
            self.counts = torch.zeros(groups, 1, 1, device=device)
            self.integrators = [StepIntegrator(r1) for _ in plan.concepts]
            self._weight_abs: torch.Tensor | None = None  # |W| in float32, made at the first step's end

    # -- accumulation (inside the forward hook) --------------------------------------------
    def observe(self, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, step_slot: int) -> None:
        """x, y: the observed rows only; rows: their saliency groups."""
        if self.mode == "fast":
            self._observe_fast(x, rows, step_slot)
        else:
            self._observe_exact(x, y, rows)

    def _observe_fast(self, x: torch.Tensor, rows: torch.Tensor, step: int) -> None:
        batch, tokens, c_in = x.shape
        for part in _chunks(batch, tokens * c_in * 4):
            xs = x[part].float()
            xs = xs / xs.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            column_norms = xs.square().sum(dim=1).sqrt()  # (batch, C_in)
            self.sums[step].index_add_(0, rows[part], column_norms)
            self.squares[step].index_add_(0, rows[part], column_norms.square())
        self.counts[step].index_add_(0, rows, torch.ones(len(rows), 1, device=rows.device))

    def _observe_exact(self, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, eps: float = 1e-8) -> None:
        batch, tokens, c_in = x.shape
        c_out = y.shape[-1]
        for part in _chunks(batch, c_in * c_out * 4 + tokens * (c_in + 2 * c_out) * 4):
            xs, ys, groups = x[part].float(), y[part].float(), rows[part]
            x_norm = xs.norm(dim=1)  # (b, C_in)
            y_norm = ys.norm(dim=1)  # (b, C_out)
            # V = |<X_j, Y_i>| ||X_j|| / (||X_j|| ||Y_i|| + eps) = |<X_j, Y_i / ||Y_i||>| * r_ij with
            # r_ij = ||X_j|| ||Y_i|| / (||X_j|| ||Y_i|| + eps): one GEMM on unit columns of Y and no
            # weight-sized division. r_ij rounds to 1 in float32 unless ||X_j|| ||Y_i|| < eps * 2^24;
            # only then (columns that hardly carry anything) is it applied.
            unit = ys / y_norm.clamp(min=torch.finfo(torch.float32).tiny).unsqueeze(1)
            inner = torch.bmm(unit.transpose(1, 2), xs).abs_()  # (b, C_out, C_in)
            if float(x_norm.amin() * y_norm.amin()) < eps * 2**24:
                product = y_norm.unsqueeze(2) * x_norm.unsqueeze(1)
                inner *= product / (product + eps)
            self.sums.index_add_(0, groups, inner)
            # Squares only count for base groups; other rows add zeros (no host sync to filter them).
            slots = self.square_slot[groups]
            is_base = (slots >= 0).to(inner.dtype).view(-1, 1, 1)
            self.squares.index_add_(0, slots.clamp(min=0), inner.square_().mul_(is_base))
        self.counts.index_add_(0, rows, torch.ones(len(rows), 1, 1, device=rows.device))

    # -- step and collection ends -------------------------------------------------------------
    def finish_exact_step(self) -> None:
        """Fold the finished step into each concept's time integral and reset the sums.

        Each base group's mean and spread are computed once for all concepts that share it, and
        each concept's S_t is formed in one reused buffer (the same operations, in the same
        order, as S_t = |W| * relu(mean_c - mean_b - std_b)).
        """
        if not bool((self.counts > 0).any()):
            return
        counts = self.counts.clamp(min=1)
        if self._weight_abs is None:
            # In a host's low-VRAM mode the module's weight may live elsewhere than the statistics.
            self._weight_abs = self.weight.detach().to(self.sums.device).abs().float()
        base_terms = {}
        for bg in sorted(set(self.plan.base_groups)):
            spread = _std(self.sums[bg], self.squares[int(self.square_slot[bg])], self.counts[bg])
            base_terms[bg] = (self.sums[bg] / counts[bg], spread)
        step_saliency = torch.empty_like(self._weight_abs)
        for concept, (cg, bg) in enumerate(zip(self.plan.concept_groups, self.plan.base_groups, strict=True)):
            self._require_samples(cg, bg, self.counts[:, 0, 0])
            base_mean, spread = base_terms[bg]
            torch.div(self.sums[cg], counts[cg], out=step_saliency)
            step_saliency.sub_(base_mean).sub_(spread).clamp_(min=0).mul_(self._weight_abs)
            self.integrators[concept].add(step_saliency)
        self.sums.zero_()
        self.squares.zero_()
        self.counts.zero_()

    def _require_samples(self, concept_group: int, base_group: int, counts: torch.Tensor) -> None:
        if counts[concept_group] == 0 or counts[base_group] == 0:
            raise InvalidInputError(
                f"layer {self.layer.canonical}: a step saw no concept or no base samples "
                f"(concept group {concept_group}, base group {base_group}); every step must run every group"
            )

    def result(self) -> LayerSaliency:
        if self.mode == "exact":
            return LayerSaliency(integrated=torch.stack([i.result() for i in self.integrators]))
        means = self.sums / self.counts.clamp(min=1)
        concept_means, base_means, spreads = [], [], []
        for cg, bg in zip(self.plan.concept_groups, self.plan.base_groups, strict=True):
            self._require_samples(cg, bg, self.counts[:, :, 0].amin(dim=0))
            concept_means.append(means[:, cg])
            base_means.append(means[:, bg])
            spreads.append(_std(self.sums[:, bg], self.squares[:, bg], self.counts[:, bg]))
        contrast = ColumnContrast(torch.stack(concept_means), torch.stack(base_means), torch.stack(spreads))
        scores = (contrast.concept_mean - contrast.base_mean - contrast.base_std).clamp_(min=0)
        return LayerSaliency(
            column_scores=scores,
            weight_abs=self.weight.detach().to(self.sums.device).abs(),
            contrast=contrast if self.keep_contrast else None,
        )


class SaliencyCollector:
    """Attach to a UNet's target layers, observe a short denoising run, hand out ConceptSaliency.

    Use as ``with collector.attached(): <run the steps>`` so that hooks are removed on error
    or interrupt too; then ``collector.result()``.
    """

    def __init__(
        self,
        targets: UNetTargets,
        plan: GroupPlan,
        saliency_steps: int,
        mode: str = "fast",
        r1: float = 0.05,
        settings: dict | None = None,
        keep_contrast: bool = False,
    ):
        """keep_contrast: in fast mode, also hand out the contrast's terms (LayerSaliency.contrast)."""
        if mode not in MODES:
            raise InvalidInputError(f"mode must be one of {MODES}, got {mode!r}")
        if saliency_steps < 1:
            raise InvalidInputError(f"saliency_steps must be at least 1, got {saliency_steps}")
        self.targets = targets
        self.plan = plan
        self.mode = mode
        self.r1 = check_ratio("r1", r1) if mode == "exact" else None
        self.saliency_steps = saliency_steps
        self.settings = dict(settings or {})
        self._stats = [_LayerStats(layer, plan, saliency_steps, mode, self.r1, keep_contrast) for layer in targets]
        self._rows: torch.Tensor | None = None
        self._step: int | None = None
        self._steps_seen: list[int] = []
        self._handles: list = []

    # -- driven by the host -------------------------------------------------------------------
    def set_step(self, step: int) -> None:
        """Declare the denoising step of the following UNet calls (0-based in the schedule)."""
        if step == self._step:
            return
        if step in self._steps_seen:
            if self.mode == "exact":
                raise InvalidInputError("exact mode needs every row of a step in one pass, steps in order")
        elif len(self._steps_seen) >= self.saliency_steps:
            raise InvalidInputError(
                f"step {step} is beyond the {self.saliency_steps} saliency steps this collector was made for"
            )
        if self.mode == "exact" and self._step is not None:
            for stats in self._stats:
                stats.finish_exact_step()
        self._step = step
        if step not in self._steps_seen:
            self._steps_seen.append(step)

    def set_rows(self, groups: torch.Tensor) -> None:
        """Saliency group of every row of the next UNet call's batch; -1 rows are not observed.

        The observed rows are picked here, once per UNet call, not in every layer's hook.
        """
        keep = torch.nonzero(groups >= 0).flatten()
        self._rows = (len(groups), keep, groups[keep])

    def _hook(self, stats: _LayerStats):
        def hook(module, inputs, output):
            if self._rows is None or self._step is None:
                return
            x = inputs[0]
            total, keep, rows = self._rows
            if x.shape[0] != total:
                raise InvalidInputError(
                    f"layer {stats.layer.canonical} saw a batch of {x.shape[0]} rows, but the row "
                    f"layout names {total}; call set_rows before every UNet call"
                )
            stats.weight = module.weight
            if not len(keep):
                return
            if keep.device != x.device:  # moved once per UNet call, then reused by every layer
                keep, rows = keep.to(x.device), rows.to(x.device)
                self._rows = (total, keep, rows)
            with torch.no_grad():
                stats.observe(
                    x.detach().index_select(0, keep),
                    output.detach().index_select(0, keep),
                    rows,
                    self._steps_seen.index(self._step),
                )

        return hook

    @contextmanager
    def attached(self):
        """Hooks on every target layer for the duration of the block, removed whatever happens."""
        if self._handles:
            raise RuntimeError("collector is already attached")
        try:
            for stats in self._stats:
                self._handles.append(stats.layer.module.register_forward_hook(self._hook(stats)))
            yield self
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()

    # -- result ---------------------------------------------------------------------------------
    def result(self) -> ConceptSaliency:
        if not self._steps_seen:
            raise InvalidInputError("no denoising step was observed: run the UNet inside attached()")
        if self.mode == "exact":
            for stats in self._stats:
                stats.finish_exact_step()
            self._step = None
        if self.mode == "fast" and len(self._steps_seen) < self.saliency_steps:
            for stats in self._stats:  # keep only the steps that ran
                used = len(self._steps_seen)
                stats.sums, stats.squares, stats.counts = stats.sums[:used], stats.squares[:used], stats.counts[:used]
        layers = {stats.layer.canonical: stats.result() for stats in self._stats}
        return ConceptSaliency(
            concepts=self.plan.concepts,
            mode=self.mode,
            family=self.targets.family,
            shapes=self.targets.shapes,
            fingerprint=self.targets.fingerprint,
            weight_signature=weight_signature(self.targets),
            layers=layers,
            steps=tuple(self._steps_seen),
            r1=self.r1,
            settings=self.settings,
        )
