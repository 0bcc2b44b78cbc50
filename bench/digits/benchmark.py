"""P1 and P2 of the digits benchmark (BENCHMARKS.md section 1), every method on one model.

P1: forget zero..four, keep five..nine. P2: forget the first k digits, k = 1..9, keep the
rest. The original model's images do not depend on the forget set, so they are sampled
once per protocol size and judged against each forget set.
"""

from __future__ import annotations

import datetime
import logging
import platform
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import torch

from fia_engine.output_paths import atomic_file

from ..report import write_section  # noqa: F401  (re-exported for the CLI)
from .methods import MethodGroup
from .unlearning import DigitsBench, Row, mean_std, relative_preserve, table

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402  (the backend must be chosen first)

logger = logging.getLogger(__name__)

P1_FORGET = [0, 1, 2, 3, 4]
P1_HEADING = "## 3. Digits benchmark P1: forget five digits at once (issues 4, 5)"
P2_HEADING = "## 4. Digits benchmark P2: forgetting more and more digits (issues 4, 5)"
PAIRS_HEADING = "## 5. Digits: how many prompt pairs FIA needs (issue 4)"


@dataclass
class ProtocolResult:
    name: str
    original: Row
    rows: list[Row]  # every method, every forget set, in run order
    images_per_digit: int
    seeds: tuple[int, ...]


def run_protocol(
    name: str, bench: DigitsBench, forget_sets: list[list[int]], groups: list[MethodGroup]
) -> ProtocolResult:
    logger.info("%s: sampling the original model", name)
    original_accuracy = bench.accuracy()
    rows = []
    for forget in forget_sets:
        rows.append(Row("original", list(forget), original_accuracy, 0.0, 0.0))
        for group in groups:
            for method, edit in group(bench, forget).items():
                logger.info("%s forget %s: %s, judging", name, forget, method)
                rows.append(Row(method, list(forget), bench.accuracy(edit.unet), edit.fraction, edit.seconds))
    return ProtocolResult(name, rows[0], rows, bench.n, bench.seeds)


def p2_table(result: ProtocolResult) -> str:
    lines = ["| k | method | forget acc % | preserve acc % | overall | edited % | s |", "|---|---|---|---|---|---|---|"]
    for row in result.rows:
        f, fs = mean_std(row.forget_acc())
        p, ps = mean_std(row.preserve_acc())
        o, _ = mean_std(row.overall())
        lines.append(
            f"| {len(row.forget)} | {row.method} | {100 * f:.1f} ± {100 * fs:.1f} | {100 * p:.1f} ± {100 * ps:.1f} "
            f"| {o:.3f} | {100 * row.pruned_fraction:.3f} | {row.seconds:.1f} |"
        )
    return "\n".join(lines)


def p1_targets(result: ProtocolResult) -> list[str]:
    """The issue's P1 targets, met or not, for every FIA row."""
    lines = []
    original = next(r for r in result.rows if r.method == "original")
    for row in result.rows:
        if not row.method.startswith("FIA") or "union" in row.method:
            continue
        forget = mean_std(row.forget_acc())[0]
        keep = relative_preserve(row, original)
        overall = mean_std(row.overall())[0]
        verdict = "met" if forget <= 0.05 and keep >= 0.90 and overall >= 0.90 else "MISSED"
        lines.append(
            f"- {row.method}: forget {100 * forget:.1f} % (target <= 5), preserve {100 * keep:.1f} % of the "
            f"original's (target >= 90), overall {overall:.3f} (target >= 0.90): {verdict}"
        )
    return lines


def plot_p2(result: ProtocolResult, path: Path) -> Path:
    methods = list(dict.fromkeys(r.method for r in result.rows))
    fig, (ax_f, ax_p) = plt.subplots(1, 2, figsize=(10, 4))
    for method in methods:
        rows = sorted((r for r in result.rows if r.method == method), key=lambda r: len(r.forget))
        ks = [len(r.forget) for r in rows]
        for ax, values in ((ax_f, [r.forget_acc() for r in rows]), (ax_p, [r.preserve_acc() for r in rows])):
            means = [100 * mean_std(v)[0] for v in values]
            spreads = [100 * mean_std(v)[1] for v in values]
            ax.errorbar(ks, means, yerr=spreads, marker="o", capsize=3, label=method)
    ax_f.set(title="forgotten digits (lower is better)", xlabel="digits forgotten (k)", ylabel="judge accuracy %")
    ax_p.set(title="kept digits (higher is better)", xlabel="digits forgotten (k)", ylabel="judge accuracy %")
    for ax in (ax_f, ax_p):
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    ax_p.legend(fontsize=8, loc="lower left")
    fig.suptitle(f"P2 on the digits model: {result.images_per_digit} images per digit x {len(result.seeds)} seeds")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def _preamble(heading: str, command: str, settings_line: str, threads: int | None = None) -> list[str]:
    threads = threads or torch.get_num_threads()
    return [
        heading,
        "",
        f"Command: `{command}`",
        "",
        f"Run on {platform.machine()} CPU, {threads} thread(s) per process, torch {torch.__version__}, "
        f"{datetime.date.today().isoformat()}. Accuracy is the judge's on the model's samples of "
        "'a handwritten {digit}'; ± is the standard deviation over seeds. Wall time is the time to make "
        "the edit (FIA: collection, localisation and fusion; ScaPre: encoding and the solve), not the "
        "evaluation. Pruned/edited %: FIA's pruned share of the FFN2 weights; ScaPre's share of "
        "to_k/to_v rows it changed (>= 10 % of the layer's largest row change).",
        "",
        settings_line,
        "",
    ]


def p1_report(
    command: str, settings_line: str, p1: ProtocolResult, threads: int | None = None, heading: str | None = None
) -> str:
    parts = _preamble(heading or P1_HEADING, command, settings_line, threads)
    parts += [
        f"Forget zero..four, keep five..nine; {p1.images_per_digit} images per digit x {len(p1.seeds)} seeds.",
        "",
        table(p1.rows),
        "",
        *p1_targets(p1),
    ]
    return "\n".join(parts) + "\n"


def p2_report(
    command: str,
    settings_line: str,
    p2: ProtocolResult,
    plot: Path | None,
    threads: int | None = None,
    heading: str = P2_HEADING,
) -> str:
    parts = _preamble(heading, command, settings_line, threads)
    parts += [
        f"Forget the first k digits, keep the rest; {p2.images_per_digit} images per digit x {len(p2.seeds)} seed(s).",
        "",
        p2_table(p2),
    ]
    if plot:  # a part saved for `report` has no plot of its own
        parts += ["", f"![P2 curves]({plot.name})"]
    return "\n".join(parts) + "\n"


def pairs_report(command: str, sweep: dict[int, ProtocolResult]) -> str:
    lines = [
        PAIRS_HEADING,
        "",
        f"Command: `{command}`",
        "",
        "P1 with FIA fast at every K (prompt pairs per concept), all else frozen; "
        f"{next(iter(sweep.values())).images_per_digit} images per digit x {len(next(iter(sweep.values())).seeds)} seeds.",
        "",
        "| K | forget acc % | preserve acc % | overall | pruned % | unlearn s |",
        "|---|---|---|---|---|---|",
    ]
    for pairs, result in sweep.items():
        row = next(r for r in result.rows if r.method != "original")
        f, fs = mean_std(row.forget_acc())
        p, ps = mean_std(row.preserve_acc())
        o, _ = mean_std(row.overall())
        lines.append(
            f"| {pairs} | {100 * f:.1f} ± {100 * fs:.1f} | {100 * p:.1f} ± {100 * ps:.1f} | {o:.3f} "
            f"| {100 * row.pruned_fraction:.3f} | {row.seconds:.1f} |"
        )
    return "\n".join(lines) + "\n"
