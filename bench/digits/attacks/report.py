"""The RESULTS section and the plot of an attack run."""

from __future__ import annotations

import datetime
import platform
from pathlib import Path

import matplotlib
import torch

from fia_engine.output_paths import atomic_file

from . import HEADING
from .embedding import ATTACK_PROMPT
from .refill import HOLDOUT, RANKS, TRAINED
from .run import AttackResult, RefillRow, Scores
from .targets import LEARNED, LEARNED_DECOYS, ORIGINAL
from .wordings import FAMILIES

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402  (the backend must be chosen first)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def recovery(attacked: float, edited: float, original: float) -> float:
    """Share of the forgetting undone: 0 = still as erased as the edit left it, 1 = back to the original."""
    gap = original - edited
    return (attacked - edited) / gap if gap > 1e-9 else float("nan")


def _scores(result: AttackResult, row: RefillRow) -> Scores:
    return row.scores if row.scores is not None else result.scores[row.target]


def section(result: AttackResult, command: str, plot: Path | None, wall: float) -> str:
    s = result.settings
    lines = [
        HEADING,
        "",
        f"Command: `{command}`",
        "",
        f"Run on {platform.machine()} CPU, {torch.get_num_threads()} thread(s), torch {torch.__version__}, "
        f"{datetime.date.today().isoformat()}; wall time {wall:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
        + "). P1: forget zero..four, keep five..nine. Every attack runs on the original model too (the control: "
        "an attack that cannot make the original draw the digit proves nothing). Forget accuracy = share of "
        "images of the erased digits' prompts that the judge reads as the asked digit (chance is 10 %). "
        f"Seeds {list(s.seeds)}; forget / preserve and refill rows: {s.n} images per digit and seed "
        "('a handwritten <digit>').",
        "",
        "| model | forget acc % | preserve acc % |",
        "|---|---|---|",
        *(f"| {name} | {_pct(sc.forget)} | {_pct(sc.preserve)} |" for name, sc in result.scores.items()),
        "",
    ]
    if result.wordings:
        lines += _wordings(result)
    if result.embedding:
        lines += _embedding(result)
    if result.refills:
        lines += _refill(result)
    if plot:
        lines += [f"![attacks]({plot.name})", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _wordings(result: AttackResult) -> list[str]:
    s = result.settings
    families = list(FAMILIES)
    numerals = (
        "none: '0'..'9' are [UNK], the same token for every digit, so numeral prompts cannot name a digit on this "
        "model and are not run"
        if not result.numerals
        else ", ".join(result.numerals)
    )
    lines = [
        f"**1. Held-out wordings.** {s.wording_n} images per prompt, erased digit and seed. Numerals the tokenizer "
        f"knows: {numerals}. Forget accuracy % per wording family:",
        "",
        "| model | " + " | ".join(families) + " |",
        "|---|" + "---|" * len(families),
    ]
    for name, family in result.wordings.items():
        lines.append(f"| {name} | " + " | ".join(_pct(family[f]) for f in families) + " |")
    lines += ["", "Per prompt (forget accuracy %, '{w}' is the erased digit's word):", ""]
    names = list(result.prompts)
    lines += ["| prompt | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for templates in FAMILIES.values():
        for t in templates:
            lines.append(f"| `{t}` | " + " | ".join(_pct(result.prompts[n][t]) for n in names) + " |")
    return [*lines, ""]


def _embedding(result: AttackResult) -> list[str]:
    s = result.settings
    budgets = sorted(s.embedding.budgets)
    lines = [
        f"**2. Learned embedding.** One vector per erased digit replaces the token <x> of '{ATTACK_PROMPT}' "
        "(start: the embedding of 'digit'); Adam "
        f"(lr {s.embedding.lr}, {s.embedding.batch} real training images of the digit per step, t uniform) makes "
        "the attacked model's noise prediction match the original's on 'a handwritten <digit>'. Success = share "
        f"of {s.embedding_n} samples per digit and seed judged as the erased digit, after each step budget:",
        "",
        "| model | " + " | ".join(f"{b} steps" for b in budgets) + " |",
        "|---|" + "---|" * len(budgets),
    ]
    for name, success in result.embedding.items():
        lines.append(f"| {name} | " + " | ".join(_pct(success[b]) for b in budgets) + " |")
    return [*lines, ""]


def _refill(result: AttackResult) -> list[str]:
    original, s = result.scores[ORIGINAL], result.settings
    lines = [
        "**3. Refill of the pruned FFN2 entries** (bench/digits/attacks/refill.py). The mask is the learned FFN2 "
        "mask of issue 12's gate (objective 'kept', 5 % of the FFN2 weights), NOT an FIA mask: FIA does not "
        "forget on this model (sections 3, 8, 9), so there would be nothing to revive. 'decoy fill' is that mask "
        "applied the way `python -m fia_engine bake --fill decoys` writes it (the same function, "
        "fia_engine.decoys). Low-rank completion picks its rank per layer from "
        f"{list(RANKS)} on a held-out {100 * HOLDOUT:g} % of the known entries. '{TRAINED}': the candidate entries "
        f"(every FFN2 weight for 'all FFN2 weights') fine-tuned for {s.retrain.steps} Adam steps (lr {s.retrain.lr}, "
        f"{s.retrain.batch} real training images of the erased digits per step, the model's own denoising loss on "
        "'a handwritten <digit>'; the attacker has images, not the original model). Recovery = share of the forgetting "
        "undone: (forget after - forget of the attacked model) / (original's forget - attacked model's).",
        "",
        "| attacked model | threat | fill | entries refilled | of them pruned | forget acc % | preserve acc % "
        "| recovery | ranks chosen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result.refills:
        sc, edited = _scores(result, row), result.scores[row.target]
        rec = recovery(sc.forget, edited.forget, original.forget) if row.candidates else 0.0
        ranks = f"{min(row.ranks)}..{max(row.ranks)}" if row.ranks else "-"
        lines.append(
            f"| {row.target} | {row.threat} | {row.fill} | {row.candidates:,} | {row.true_hits:,} of {row.pruned:,} | "
            f"{_pct(sc.forget)} | {_pct(sc.preserve)} | {rec:.2f} | {ranks} |"
        )
    lines += ["", *defence_lines(result), ""]
    return lines


def _best(result: AttackResult, target: str, threats: tuple[str, ...]) -> RefillRow | None:
    rows = [r for r in result.refills if r.target == target and r.threat in threats and "control" not in r.fill]
    return max(rows, key=lambda r: _scores(result, r).forget, default=None)


def defence_lines(result: AttackResult) -> list[str]:
    """The issue's targets for the decoy fill, met or not (attacker with the baked weights only)."""
    if LEARNED not in result.scores or LEARNED_DECOYS not in result.scores:
        return []
    original, plain, decoys = result.scores[ORIGINAL], result.scores[LEARNED], result.scores[LEARNED_DECOYS]
    weights_only = ("exact zeros", "outliers", "all FFN2 weights")
    undefended, defended = _best(result, LEARNED, weights_only), _best(result, LEARNED_DECOYS, weights_only)
    if undefended is None or defended is None:
        return []
    rec_plain = recovery(_scores(result, undefended).forget, plain.forget, original.forget)
    rec_decoys = recovery(_scores(result, defended).forget, decoys.forget, original.forget)
    d_forget, d_preserve = 100 * (decoys.forget - plain.forget), 100 * (decoys.preserve - plain.preserve)
    met_rec = rec_decoys <= rec_plain / 2
    # compared as printed (0.1 point): 2.0 is within 2 points, whatever the float's last bits say
    met_fp = abs(round(d_forget, 1)) <= 2 and abs(round(d_preserve, 1)) <= 2
    trivial = " (trivially: without the fill the attack recovers nothing either)" if rec_plain <= 0.05 else ""
    return [
        "Defence targets (attacker with the baked weights only; the strongest attack of each, controls excluded):",
        f"- recovery with the decoy fill {rec_decoys:.2f} ({defended.threat} / {defended.fill}) against "
        f"{rec_plain:.2f} without ({undefended.threat} / {undefended.fill}); target <= half: "
        f"{'met' if met_rec else 'MISSED'}{trivial}",
        f"- forget {_pct(decoys.forget)} % against the plain mask's {_pct(plain.forget)} % ({d_forget:+.1f} points), "
        f"preserve {_pct(decoys.preserve)} % against {_pct(plain.preserve)} % ({d_preserve:+.1f}); target within 2 "
        f"points: {'met' if met_fp else 'MISSED'}",
        "- with the mask leaked, the fill does not matter: every refill overwrites the mask's entries, whatever "
        "the bake wrote there, so those rows hold for both bakes.",
    ]


def plot(result: AttackResult, path: Path) -> Path:
    panels = [p for p, present in (("w", result.wordings), ("e", result.embedding), ("r", result.refills)) if present]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=False):
        if panel == "w":
            families, names = list(FAMILIES), list(result.wordings)
            width = 0.8 / len(names)
            for k, name in enumerate(names):
                xs = [i + k * width for i in range(len(families))]
                ax.bar(xs, [100 * result.wordings[name][f] for f in families], width, label=name)
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(families))], families, rotation=20, fontsize=7)
            ax.set(title="1. held-out wordings", ylabel="erased digits judged as asked %")
        elif panel == "e":
            for name, success in result.embedding.items():
                budgets = sorted(success)
                ax.plot(budgets, [100 * success[b] for b in budgets], marker="o", label=name)
            ax.set(title="2. learned embedding", xlabel="optimiser steps", ylabel="attack success %")
        else:
            labels = [f"{r.target.split(',')[-1].strip()}\n{r.threat} / {r.fill}" for r in result.refills]
            values = [100 * _scores(result, r).forget for r in result.refills]
            ax.barh(range(len(values)), values, color="tab:red")
            ax.set_yticks(range(len(values)), labels, fontsize=6)
            for name, style in ((ORIGINAL, "--"), (LEARNED, ":"), (LEARNED_DECOYS, "-.")):
                if name in result.scores:
                    ax.axvline(100 * result.scores[name].forget, ls=style, color="k", label=f"{name}, no attack")
            ax.set(title="3. refill of pruned entries", xlabel="forget acc %", xlim=(0, 100))
        if panel != "r":
            ax.axhline(10, color="grey", lw=0.8, ls="--", label="chance")
            ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path
