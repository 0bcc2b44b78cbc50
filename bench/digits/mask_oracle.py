"""What can a mask of FIA's layers make the digits model forget? A learned-mask reference.

FIA picks the FFN2 weights to prune without training and without knowing what must be kept.
This reference is given both: it *learns* a mask by gradient descent, with the kept digits
in its objective. What the learned mask cannot forget, a training-free choice of FFN2
weights is unlikely to forget either (the limit is then the model); what it does forget
and FIA does not is what FIA's saliency misses. The same optimiser, objective and budget on
the cross-attention value projections (``attn2.to_v``, which the closed-form edits change)
is the positive control: it shows the optimiser finds a forgetting mask where one exists.

Objective (a concept-ablation distillation; the teacher is the unmasked model itself), in
one of two forms:

    "base":  eps_masked(x_t(forgotten digit image), "a handwritten <forgotten digit> <place>")
                 -> eps(x_t, "a handwritten digit <place>")
    "kept":  eps_masked(x_t(image of a random KEPT digit k), "a handwritten <forgotten digit> <place>")
                 -> eps(x_t, "a handwritten <k> <place>")
    keep:    eps_masked(x_t(kept digit image), "a handwritten <kept digit> <place>") -> eps(x_t, the same prompt)
    loss = (forget error + keep error) / forget error of the unmasked model + sparsity * mean(1 - gate)

with x_t real training digits noised at t in [t_min, 1000). "base" asks the forgotten prompts
to draw what "a handwritten digit" draws, which with ten digits still draws each forgotten
digit about one time in ten: its floor is near the gate's 10 %. "kept" asks them to draw the
kept digits only (the optimum of that regression is the score of the kept digits' mixture),
i.e. a model that no longer draws the forgotten digits at all, which is what pruning a
concept's own weights should do. Every weight of the chosen layers has a gate sigmoid(logit),
all starting nearly open. After training, gates below 1/2 are pruned (the weight set to 0),
at most ``budget`` of the weights (the most closed gates first) when a budget is set, and
the pruned copy is judged like the benchmark's rows.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fia_engine import find_target_layers, fuse, localize_concepts
from fia_engine.diffusers_runner import collect_saliency
from fia_engine.masks import FIAMask
from fia_engine.scapre import find_cross_attention_projections

from .data import DIGIT_WORDS, POSITION_PHRASES, draw, load_split, random_render
from .model import to_latent
from .tokenizer import encode
from .unlearning import BASE_TEMPLATE, CONCEPT_TEMPLATE, DigitsBench, FiaSettings, masked_unet

logger = logging.getLogger(__name__)

LAYER_SETS = ("ffn2", "to_v")
OBJECTIVES = ("base", "kept")
ROW_NAMES = {
    "original": "none (original)",
    "ffn2": "learned mask of FFN2 (FIA's layers)",
    "fia": "FIA fast (FFN2)",
    "to_v": "learned mask of cross-attention to_v (control)",
}


@dataclass(frozen=True)
class OracleSettings:
    steps: int = 600
    batch: int = 32  # images per side (forget, keep) and step
    lr: float = 0.05
    sparsity: float = 0.3  # in units of the unmasked model's forget error
    init_logit: float = 4.0  # sigmoid(4) = 0.98: every gate starts nearly open
    t_min: int = 200
    seed: int = 0
    objective: str = "base"  # OBJECTIVES: what the forgotten prompts are distilled onto
    budget: float = 0.0  # largest pruned share of the layers' weights; 0: every gate below 1/2
    hard_from: float = 1.0  # share of the steps after which gates are binary (straight-through); 1: never


@dataclass
class OracleRow:
    layers: str
    pruned_fraction: float  # of the weights of the chosen layers
    objective_left: float  # forget error after training / before (1 = the mask changed nothing)
    forget: float  # judge accuracy on the forgotten digits
    preserve: float
    in_learned: float | None = None  # FIA row: share of its pruned weights in the learned FFN2 mask


def masked_linears(unet: torch.nn.Module, layer_set: str) -> dict[str, torch.nn.Linear]:
    """The linears a mask may prune: FIA's FFN2 layers or the cross-attention value projections."""
    if layer_set == "ffn2":
        return {layer.canonical: layer.module for layer in find_target_layers(unet)}
    if layer_set == "to_v":
        return {t.canonical: t.module for t in find_cross_attention_projections(unet) if t.kind == "to_v"}
    raise ValueError(f"unknown layer set {layer_set!r}; choose from {LAYER_SETS}")


class _Gates:
    """Per-weight sigmoid gates on some linears, applied by forward hooks while attached."""

    def __init__(self, modules: dict[str, torch.nn.Linear], init_logit: float):
        self.modules = modules
        self.logits = {name: torch.full_like(m.weight, init_logit, requires_grad=True) for name, m in modules.items()}
        self._handles = []
        self.hard_budget: float | None = None  # set: binary gates, as the pruned copy will have them

    def _gate(self, name: str) -> torch.Tensor:
        soft = torch.sigmoid(self.logits[name])
        if self.hard_budget is None:
            return soft
        # Straight-through: the forward sees exactly the mask that will be pruned (budget
        # included), the gradient is the soft gate's, so training and the judged copy agree.
        hard = (~self._closed[name]).to(soft.dtype)
        return hard + soft - soft.detach()

    def harden(self, budget: float) -> None:
        """From now on, gates are binary: closed where ``pruned(budget)`` says, refreshed each step."""
        self.hard_budget = budget
        self.refresh()

    def refresh(self) -> None:
        if self.hard_budget is not None:
            self._closed = self.pruned(self.hard_budget)

    def _hook(self, name: str):
        def hook(module, inputs, output):
            return F.linear(inputs[0], module.weight * self._gate(name), module.bias)

        return hook

    def __enter__(self):
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in self.modules.items()]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def closed_share(self) -> torch.Tensor:
        return torch.cat([(1 - torch.sigmoid(x)).flatten() for x in self.logits.values()]).mean()

    def pruned(self, budget: float = 0.0) -> dict[str, torch.Tensor]:
        """Gates below 1/2; with a budget, at most that share of all gates, the most closed first."""
        closed = {name: torch.sigmoid(x.detach()) < 0.5 for name, x in self.logits.items()}
        total = sum(x.numel() for x in self.logits.values())
        if budget <= 0 or sum(int(c.sum()) for c in closed.values()) <= budget * total:
            return closed
        flat = torch.cat([x.detach().flatten() for x in self.logits.values()])
        cut = torch.kthvalue(flat, int(budget * total)).values
        return {name: (x.detach() <= cut) & closed[name] for name, x in self.logits.items()}


class _Batches:
    """Real training digits of given classes, rendered at random, with matching prompts."""

    def __init__(self, seed: int):
        self.images, self.labels = load_split()["train"]
        self.rng = np.random.default_rng(seed)

    def draw(
        self, digits: list[int], n: int, shown: list[int] | None = None
    ) -> tuple[torch.Tensor, list[str], list[str]]:
        """Images, the asked prompts (of ``digits``) and the wanted prompts.

        Without ``shown`` the images are of the asked digits and the wanted prompt is the base
        prompt; with it the images are of a random digit of ``shown`` and the wanted prompt names it.
        """
        canvases, asked, wanted = [], [], []
        for _ in range(n):
            digit = int(self.rng.choice(digits))
            drawn = digit if shown is None else int(self.rng.choice(shown))
            index = int(self.rng.choice(np.flatnonzero(self.labels == drawn)))
            render = random_render(drawn, self.rng)
            place = POSITION_PHRASES[render.position][0]
            canvases.append(draw(self.images[index], render.side, render.bold, render.row, render.col))
            asked.append(CONCEPT_TEMPLATE.format(concept=DIGIT_WORDS[digit], context=place))
            wanted.append(
                BASE_TEMPLATE.format(context=place)
                if shown is None
                else CONCEPT_TEMPLATE.format(concept=DIGIT_WORDS[drawn], context=place)
            )
        return to_latent(torch.stack(canvases)), asked, wanted

    def draw_forget(self, forget: list[int], kept: list[int], n: int, objective: str):
        """One forget batch for ``objective`` (OBJECTIVES)."""
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose from {OBJECTIVES}")
        return self.draw(forget, n, shown=kept if objective == "kept" else None)


class _Distillation:
    """One batch of the objective: noisy images, the asked prompts, the teacher's wanted prediction."""

    def __init__(self, bench: DigitsBench, clean, asked_prompts, wanted_prompts, t, noise):
        teacher, text_encoder, tokenizer, scheduler = bench.sampling
        self.noisy, self.t = scheduler.add_noise(clean, noise, t), t
        with torch.no_grad():  # only the gates learn
            self.asked = text_encoder(encode(tokenizer, asked_prompts))[0]
            wanted = text_encoder(encode(tokenizer, wanted_prompts))[0]
            self.target = teacher(self.noisy, t, wanted).sample

    def errors(self, unet: torch.nn.Module) -> torch.Tensor:
        """Per image: how far ``unet`` on the asked prompts is from the teacher on the wanted ones."""
        return (unet(self.noisy, self.t, self.asked).sample - self.target).square().mean(dim=(1, 2, 3))


def learn_mask(bench: DigitsBench, forget: list[int], layer_set: str, settings: OracleSettings):
    """Train gates on a copy of the bench's UNet; returns (pruned UNet copy, pruned fraction, objective left)."""
    torch.manual_seed(settings.seed)
    original, scheduler = bench.sampling.unet, bench.sampling.scheduler
    unet = copy.deepcopy(original).requires_grad_(False)
    kept = [d for d in range(10) if d not in forget]
    batches = _Batches(settings.seed)
    gates = _Gates(masked_linears(unet, layer_set), settings.init_logit)
    optimiser = torch.optim.Adam(list(gates.logits.values()), lr=settings.lr)
    n, t_range = settings.batch, (settings.t_min, scheduler.config.num_train_timesteps)
    started = time.perf_counter()
    with gates:
        for step in range(settings.steps):
            if step == int(settings.hard_from * settings.steps):
                gates.harden(settings.budget)
            gates.refresh()
            forget_x, forget_prompts, base_prompts = batches.draw_forget(forget, kept, n, settings.objective)
            keep_x, keep_prompts, _ = batches.draw(kept, n)
            clean = torch.cat([forget_x, keep_x])
            t = torch.randint(*t_range, (2 * n,))
            noise = torch.randn_like(clean)
            # The teacher is the bench's own UNet, which carries no gates.
            batch = _Distillation(bench, clean, forget_prompts + keep_prompts, base_prompts + keep_prompts, t, noise)
            with torch.no_grad():
                reference = batch.errors(original)[:n].mean()
            error = batch.errors(unet)
            # Both terms in units of what the unmasked model gets wrong on the forget prompts.
            loss = (error[:n].mean() + error[n:].mean()) / reference + settings.sparsity * gates.closed_share()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if (step + 1) % 50 == 0:
                error = error.detach()
                logger.info(
                    "%s step %d/%d: forget error %.3f of the original's, keep error %.3f, closed %.4f, %.0f s",
                    layer_set, step + 1, settings.steps, float(error[:n].mean() / reference),
                    float(error[n:].mean() / reference), float(gates.closed_share()), time.perf_counter() - started,
                )  # fmt: skip
    pruned, total = 0, 0
    with torch.no_grad():
        for name, off in gates.pruned(settings.budget).items():
            gates.modules[name].weight[off] = 0
            pruned += int(off.sum())
            total += off.numel()
    return unet, pruned / total, objective_left(bench, unet, forget, settings)


@torch.no_grad()
def objective_left(bench: DigitsBench, unet: torch.nn.Module, forget: list[int], settings: OracleSettings) -> float:
    """Forget error of ``unet`` over the original's, on fresh images (1: the edit moved nothing)."""
    generator = torch.Generator().manual_seed(settings.seed + 1)
    kept = [d for d in range(10) if d not in forget]
    clean, asked, wanted = _Batches(settings.seed + 1).draw_forget(forget, kept, 4 * settings.batch, settings.objective)
    steps = bench.sampling.scheduler.config.num_train_timesteps
    t = torch.randint(settings.t_min, steps, (len(clean),), generator=generator)
    batch = _Distillation(bench, clean, asked, wanted, t, torch.randn(clean.shape, generator=generator))
    return float(batch.errors(unet).mean() / batch.errors(bench.sampling.unet).mean())


def pruned_sets(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Flat indices of the zero FFN2 weights of a pruned copy, per canonical layer."""
    return {name: torch.nonzero(m.weight.flatten() == 0).flatten() for name, m in masked_linears(unet, "ffn2").items()}


def overlap(fia: FIAMask, oracle: dict[str, torch.Tensor]) -> float:
    """Share of FIA's pruned weights that the learned FFN2 mask pruned too."""
    shared = sum(int(torch.isin(fia.indices[name], oracle[name]).sum()) for name in oracle)
    return shared / max(1, fia.pruned_count)


def run_oracle(
    bench: DigitsBench,
    forget: list[int],
    settings: OracleSettings,
    layer_sets: tuple[str, ...] = LAYER_SETS,
    fia: FiaSettings | None = None,
) -> list[OracleRow]:
    """The original, a learned mask per layer set and, next to the FFN2 one, FIA at ``fia``'s r2."""
    kept = [d for d in range(10) if d not in forget]

    def judged(name: str, unet, fraction: float, left: float | None, shared: float | None = None) -> OracleRow:
        accuracy = bench.accuracy(unet).mean(axis=0)
        row = OracleRow(name, fraction, left, float(accuracy[forget].mean()), float(accuracy[kept].mean()), shared)
        logger.info("%s: pruned %.2f %%, forget %.3f, preserve %.3f", name, 100 * fraction, row.forget, row.preserve)
        return row

    rows = [judged("original", None, 0.0, 1.0)]
    for layer_set in layer_sets:
        unet, fraction, left = learn_mask(bench, forget, layer_set, settings)
        rows.append(judged(layer_set, unet, fraction, left))
        if layer_set == "ffn2" and fia is not None:
            concepts = [DIGIT_WORDS[d] for d in forget]
            saliency = collect_saliency(bench.engine, concepts, fia.collection("fast"))
            mask = fuse(localize_concepts(saliency, fia.r1, fia.r2), fia.alpha)
            fia_unet = masked_unet(bench.sampling.unet, mask)
            rows.append(judged("fia", fia_unet, mask.pruned_fraction, objective_left(bench, fia_unet, forget, settings),
                               overlap(mask, pruned_sets(unet))))  # fmt: skip
    return rows


def oracle_report(
    command: str, settings: OracleSettings, bench: DigitsBench, rows: list[OracleRow], fia: FiaSettings | None = None
) -> str:
    original = rows[0]
    learned = next((r for r in rows if r.layers == "ffn2"), None)
    lines = [
        "## 9. Digits: what can a mask of FIA's layers forget here? A learned-mask reference (issue 4)",
        "",
        f"Command: `{command}`",
        "",
        "P1 (forget zero..four, keep five..nine). A mask is learned by gradient descent, knowing the kept digits "
        "(bench/digits/mask_oracle.py): forget prompts are distilled onto the base prompt 'a handwritten digit "
        f"<place>', kept prompts onto themselves, on real training digits noised at t >= {settings.t_min}; "
        f"{settings.steps} Adam steps (lr {settings.lr}), {settings.batch} + {settings.batch} images a step, "
        f"sparsity {settings.sparsity:g}; gates below 1/2 are pruned. 'objective left' is that distillation error "
        "after the edit over before, on fresh images (1 = the edit does not move the forget prompts toward the base "
        "prompt at all). Judged on "
        f"{bench.n} images per digit, seeds {list(bench.seeds)}, {bench.sample_steps} DDIM steps."
        + (
            f" The FIA row is FIA fast at r2 = {fia.r2} (K = {fia.pairs}, r1 = {fia.r1}, alpha = {fia.alpha}); "
            "'in learned mask' is the share of its pruned weights that the learned FFN2 mask pruned too "
            f"(by chance: {100 * learned.pruned_fraction:.1f} %, the learned mask's size)."
            if fia is not None and learned is not None
            else ""
        ),
        "",
        "| edit | pruned % of the layers' weights | objective left | forget acc | preserve acc | forget rel. "
        "| preserve rel. | in learned mask % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        name = ROW_NAMES.get(row.layers, row.layers)
        shared = "-" if row.in_learned is None else f"{100 * row.in_learned:.1f}"
        lines.append(
            f"| {name} | {100 * row.pruned_fraction:.2f} | {row.objective_left:.2f} | {row.forget:.3f} | "
            f"{row.preserve:.3f} | {row.forget / max(1e-9, original.forget):.2f} | "
            f"{row.preserve / max(1e-9, original.preserve):.2f} | {shared} |"
        )
    return "\n".join(lines) + "\n"
