"""Command line of the digits benchmark model: ``python -m bench.digits <command>``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from fia_engine.command_line import Parser, exit_on_user_error, ratio_arg, run_command, setup_output
from fia_engine.errors import InvalidInputError
from fia_engine.output_paths import check_output_dir, check_output_file

from . import MODEL_DIR

# Output options of the commands: folders files go into, and files replaced (RESULTS.md is
# updated section by section, the plot is redrawn). All are checked before any work starts.
_OUTPUT_FOLDERS = ("out", "save")
_OUTPUT_FILES = ("report", "plot", "save_mask", "save_run", "save_rows")


def _cmd_train(args: argparse.Namespace) -> None:
    from .train import TrainConfig, train

    if args.ffn_sparsity < 0 or not 0 < args.cross_attention_gain <= 1:
        raise InvalidInputError("--ffn-sparsity must be >= 0 and --cross-attention-gain in (0, 1]")
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        snapshot_every=args.snapshot_every,
        snapshot_dir=args.snapshot_dir,
        init_from=args.init_from,
        spec=args.spec,
        ffn_sparsity=args.ffn_sparsity,
        cross_attention_gain=args.cross_attention_gain,
        freeze_text_encoder=args.freeze_text_encoder,
    )
    metadata = train(cfg, Path(args.out))
    print(json.dumps(metadata, indent=2))


def _cmd_generate(args: argparse.Namespace) -> None:
    from .sampling import generate, grid, load_components, save_pngs, slug

    components = load_components(args.model)
    unet = None
    if args.mask:
        from .edits import edited_unet

        unet = edited_unet(components.unet, Path(args.mask))
    images = generate(components, [args.prompt], args.n, args.seed, steps=args.steps, cfg=args.cfg, unet_override=unet)
    out = Path(args.out)
    save_pngs(images, out, stem=slug(args.prompt), scale=args.scale)
    grid(images, scale=args.scale).save(out / f"{slug(args.prompt)}_grid.png")
    print(f"wrote {len(images)} images and a grid to {out}")


def _cmd_judge_accuracy(args: argparse.Namespace) -> None:
    from .judge import heldout_accuracy, load_judge

    accuracy = heldout_accuracy(load_judge(), renders_per_digit=args.renders)
    print(f"judge held-out accuracy (real TEST digits, {args.renders} random renders each): {accuracy:.4f}")


def _cmd_check_model(args: argparse.Namespace) -> None:
    from .check import WORDINGS, check_model
    from .data import DIGIT_WORDS

    result = check_model(args.model, n=args.n, seeds=tuple(args.seeds), steps=args.steps, cfg=args.cfg)
    print(
        f"check-model: {result.images_per_digit} images per digit and seed, seeds {args.seeds}, "
        f"{args.steps} DDIM steps, cfg {args.cfg}"
    )
    print(f"{'digit':<8}accuracy")
    for word, accuracy in zip(DIGIT_WORDS, result.per_digit, strict=True):
        print(f"{word:<8}{accuracy:.3f}")
    for wording in WORDINGS:
        print(f"wording {wording!r}: {result.per_wording[wording]:.3f}")
    for seed, mean in result.per_seed.items():
        print(f"seed {seed}: mean over digits {mean:.3f}")
    print(f"mean over digits: {result.mean:.3f}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from .data import DIGIT_WORDS
    from .demo import run_demo

    words = [word.strip() for word in args.forget.split(",") if word.strip()]
    unknown = [word for word in words if word not in DIGIT_WORDS]
    if unknown or not words:
        raise InvalidInputError(f"--forget takes digit words ({', '.join(DIGIT_WORDS)}), got {args.forget!r}")
    forget = [DIGIT_WORDS.index(word) for word in words]
    print(run_demo(forget, Path(args.out), images=args.n, steps=args.steps, seed=args.seed))


def _cmd_benchmark(args: argparse.Namespace) -> None:
    import sys

    import torch

    from .benchmark import P1_FORGET, p1_report, p2_report, plot_p2, run_protocol, write_section
    from .methods import fia_group
    from .unlearning import DigitsBench, FiaSettings

    settings = FiaSettings(pairs=args.pairs, r2=args.r2, alpha=args.alpha)
    modes = tuple(m for m in ("fast", "exact") if f"fia-{m}" in args.methods)
    groups = [fia_group(settings, modes=modes, union="union" in args.methods and "fast" in modes)]
    closed_form = tuple(m for m in ("scapre", "uce") if m in args.methods)
    if closed_form:
        from .methods import scapre_group

        groups.append(scapre_group(closed_form))
    p1 = p2 = plot = None
    if "p1" in args.protocols:
        bench = DigitsBench(
            args.model, images_per_digit=args.n, seeds=tuple(args.seeds), sample_steps=args.sample_steps
        )
        p1 = run_protocol("P1", bench, [P1_FORGET], groups)
    if "p2" in args.protocols:
        bench = DigitsBench(
            args.model, images_per_digit=args.p2_n, seeds=tuple(args.p2_seeds), sample_steps=args.sample_steps
        )
        p2 = run_protocol("P2", bench, [list(range(k)) for k in args.p2_k], groups)
        if args.report or not args.save:  # a saved part is plotted when `report` merges the parts
            plot = plot_p2(p2, Path(args.plot))
    command = "python -m bench.digits " + " ".join(sys.argv[1:])
    settings_line = (
        f"FIA settings (frozen for this model): K = {settings.pairs} prompt pairs, {settings.saliency_steps} "
        f"saliency steps of {settings.steps}, r1 = {settings.r1}, r2 = {settings.r2}, alpha = {settings.alpha}, "
        f"cfg {settings.cfg}; samples: {args.sample_steps} DDIM steps, cfg {settings.cfg}."
    )
    if closed_form:
        from fia_engine.scapre import ScaPreSettings

        scapre = {k: v for k, v in ScaPreSettings().to_dict().items() if k not in ("mode", "rank_tol")}
        settings_line += " ScaPre settings (the engine's defaults): " + ", ".join(
            f"{k} = {v}" for k, v in scapre.items()
        )
    if args.save:
        from .saved_runs import SavedRun, save_run

        for result, name in ((p1, "p1.json"), (p2, "p2.json")):
            if result:
                path = save_run(
                    SavedRun(result, command, settings_line, torch.get_num_threads()), Path(args.save) / name
                )
                print(f"saved {result.name} rows to {path}")
    sections = []
    if p1:
        sections.append(p1_report(command, settings_line, p1))
    if p2:
        sections.append(p2_report(command, settings_line, p2, plot))
    for section in sections:
        print(section)
        if args.report:
            write_section(Path(args.report), section)
    if args.report:
        print(f"wrote {args.report}" + (f" and {plot}" if plot else ""))


def _cmd_report(args: argparse.Namespace) -> None:
    import sys

    from .benchmark import P2_HEADING, p1_report, p2_report, plot_p2, write_section
    from .saved_runs import load_run, merge

    sections = []
    if args.p1:
        run = merge([load_run(Path(p)) for p in args.p1], "P1")
        sections.append(p1_report(run.command, run.settings_line, run.result, run.threads, args.p1_heading or None))
    if args.p2:
        run = merge([load_run(Path(p)) for p in args.p2], "P2")
        plot = plot_p2(run.result, Path(args.plot))
        command = f"{run.command} ; python -m bench.digits {' '.join(sys.argv[1:])}"
        sections.append(
            p2_report(command, run.settings_line, run.result, plot, run.threads, args.p2_heading or P2_HEADING)
        )
    if not sections:
        raise InvalidInputError("give --p1 and/or --p2 with saved runs (benchmark --save DIR writes them)")
    for section in sections:
        print(section)
        if args.report:
            write_section(Path(args.report), section)


def _cmd_sweep_pairs(args: argparse.Namespace) -> None:
    import sys

    from .benchmark import P1_FORGET, pairs_report, run_protocol, write_section
    from .methods import fia_group
    from .unlearning import DigitsBench, FiaSettings

    bench = DigitsBench(args.model, images_per_digit=args.n, seeds=tuple(args.seeds), sample_steps=args.sample_steps)
    sweep = {}
    for pairs in args.pairs:
        group = fia_group(FiaSettings(pairs=pairs), modes=("fast",), union=False)
        sweep[pairs] = run_protocol(f"P1 K={pairs}", bench, [P1_FORGET], [group])
    section = pairs_report("python -m bench.digits " + " ".join(sys.argv[1:]), sweep)
    print(section)
    if args.report:
        write_section(Path(args.report), section)


def _add_sampling_args(p: argparse.ArgumentParser, n: int, many_seeds: bool = False) -> None:
    from .sampling import DEFAULT_CFG, DEFAULT_STEPS

    p.add_argument("--model", default=str(MODEL_DIR))
    p.add_argument("--n", type=int, default=n)
    if many_seeds:
        p.add_argument("--seeds", type=int, nargs="+", default=[0], help="noise seeds, pooled")
    else:
        p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--cfg", type=float, default=DEFAULT_CFG)


def _add_p1_judging_args(p: argparse.ArgumentParser) -> None:
    """The model, and how many images per digit and seed P1 is judged on."""
    from .sampling import DEFAULT_STEPS

    p.add_argument("--model", default=str(MODEL_DIR))
    p.add_argument("--n", type=int, default=20, help="images per digit and seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--sample-steps", type=int, default=DEFAULT_STEPS)


def _cmd_diagnose_fia(args: argparse.Namespace) -> None:
    import sys

    from .benchmark import write_section
    from .diagnose import diagnose, diagnosis_report
    from .unlearning import DigitsBench, FiaSettings

    bench = DigitsBench(args.model, images_per_digit=args.n, seeds=tuple(args.seeds), sample_steps=args.sample_steps)
    settings = FiaSettings()
    rows = diagnose(bench, settings, tuple(args.r2), tuple(args.contrasts))
    section = diagnosis_report("python -m bench.digits " + " ".join(sys.argv[1:]), settings, bench, rows)
    print(section)
    if args.report:
        write_section(Path(args.report), section)


def _cmd_mask_oracle(args: argparse.Namespace) -> None:
    import sys

    from .benchmark import P1_FORGET, write_section
    from .mask_oracle import OracleSettings, oracle_report, run_oracle
    from .unlearning import DigitsBench, FiaSettings

    bench = DigitsBench(args.model, images_per_digit=args.n, seeds=tuple(args.seeds), sample_steps=args.sample_steps)
    settings = OracleSettings(
        steps=args.steps, sparsity=args.sparsity, seed=args.seed, objective=args.objective, budget=args.budget
    )
    fia = FiaSettings(r2=args.fia_r2)
    rows = run_oracle(bench, P1_FORGET, settings, tuple(args.layers), fia)
    section = oracle_report("python -m bench.digits " + " ".join(sys.argv[1:]), settings, bench, rows, fia)
    print(section)
    if args.report:
        write_section(Path(args.report), section)


def _cmd_gate(args: argparse.Namespace) -> None:
    from .gate import load_rows, run_gate, save_rows
    from .mask_oracle import OracleSettings
    from .unlearning import DigitsBench

    bench = DigitsBench(args.model, images_per_digit=args.n, seeds=tuple(args.seeds), sample_steps=args.sample_steps)
    settings = OracleSettings(
        steps=args.steps,
        sparsity=args.sparsity,
        seed=args.seed,
        objective=args.objective,
        budget=args.budget,
        hard_from=args.hard_from,
    )
    row = run_gate(bench, args.name, args.description, settings, Path(args.save_mask) if args.save_mask else None)
    if args.save_rows:
        path = Path(args.save_rows)
        save_rows(path, (load_rows(path) if path.exists() else []) + [row])
    print(row.verdict())


def _cmd_gate_table(args: argparse.Namespace) -> None:
    from .benchmark import write_section
    from .gate import gate_table, load_rows

    rows = [row for path in args.rows for row in load_rows(Path(path))]
    section = gate_table(rows, args.command)
    print(section)
    if args.report:
        write_section(Path(args.report), section)


def _cmd_attack(args: argparse.Namespace) -> None:
    import time

    from .attacks.embedding import EmbeddingSettings
    from .attacks.report import plot, section
    from .attacks.retrain import RetrainSettings
    from .attacks.run import AttackSettings, run_attacks
    from .benchmark import P1_FORGET, write_section
    from .unlearning import DigitsBench

    started = time.perf_counter()
    for name in ("n", "wording_n", "embedding_n", "batch", "mask_steps", "sample_steps", "retrain_steps"):
        if getattr(args, name) < 1:
            raise InvalidInputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if min(args.budgets) < 0 or not args.lr > 0 or not args.retrain_lr > 0:
        raise InvalidInputError("--budgets must be >= 0 steps, --lr and --retrain-lr > 0")
    mask = Path(args.mask) if args.mask else None
    if "learned-mask" in args.method and mask is None:
        from .attacks.targets import learn_p1_mask

        mask = Path(args.save_mask)
    elif mask is not None and not mask.is_file():
        raise InvalidInputError(f"--mask {args.mask}: no such file")
    settings = AttackSettings(
        attacks=tuple(args.attack),
        methods=tuple(args.method),
        n=args.n,
        seeds=tuple(args.seeds),
        wording_n=args.wording_n,
        embedding_n=args.embedding_n,
        embedding=EmbeddingSettings(budgets=tuple(sorted(set(args.budgets))), batch=args.batch, lr=args.lr),
        retrain=RetrainSettings(steps=args.retrain_steps, lr=args.retrain_lr),
        decoy_seed=args.decoy_seed,
    )
    bench = DigitsBench(args.model, images_per_digit=args.n, seeds=tuple(args.seeds), sample_steps=args.sample_steps)
    if "learned-mask" in args.method and not args.mask:
        learn_p1_mask(bench, P1_FORGET, args.mask_steps, mask)
    result = run_attacks(bench, settings, mask)
    command, wall = "python -m bench.digits " + " ".join(sys.argv[1:]), time.perf_counter() - started
    if args.save_run:
        from .attacks.run import save_result

        save_result(result, Path(args.save_run), command, wall)
    picture = plot(result, Path(args.plot)) if args.plot else None
    text = section(result, command, picture, wall)
    print(text)
    if args.report:
        write_section(Path(args.report), text)
        print(f"wrote {args.report}" + (f" and {picture}" if picture else ""))


def _cmd_attack_report(args: argparse.Namespace) -> None:
    from .attacks.report import plot, section
    from .attacks.run import load_result
    from .benchmark import write_section

    if not Path(args.run).is_file():
        raise InvalidInputError(f"{args.run}: no such file (write one with `attack --save-run FILE`)")
    result, command, wall = load_result(Path(args.run))
    picture = plot(result, Path(args.plot)) if args.plot else None
    text = section(result, command, picture, wall)
    print(text)
    if args.report:
        write_section(Path(args.report), text)


def _cmd_compare_masks(args: argparse.Namespace) -> None:
    from fia_engine.masks import FIAMask

    from .mask_compare import compare, comparison_table

    a, b = FIAMask.load(args.a), FIAMask.load(args.b)
    print(comparison_table(compare(a, b), args.name_a, args.name_b))


def _cmd_saliency_check(args: argparse.Namespace) -> None:
    from fia_engine.masks import FIAMask

    from . import contrasts
    from .benchmark import P1_FORGET
    from .saliency_check import check, collect_p1, rank_layers, report, require_made_for
    from .unlearning import DigitsBench, FiaSettings

    if args.n < 1 or args.sample_steps < 1:
        raise InvalidInputError("--n and --sample-steps must be at least 1")
    learned = FIAMask.load(args.learned)
    bench = DigitsBench(args.model, images_per_digit=args.n, seeds=tuple(args.seeds), sample_steps=args.sample_steps)
    require_made_for(bench, learned)
    settings = FiaSettings()
    saliency = collect_p1(bench, P1_FORGET, settings, keep_contrast=bool(args.contrasts))
    print(report(*check(bench, learned, settings, saliency)))
    if args.contrasts:
        aucs = {
            name: rank_layers(learned, scores)
            for name, scores in contrasts.contrast_scores(saliency, args.contrasts).items()
        }
        rows = contrasts.fia_rows(bench, saliency, args.contrasts, args.r2, settings, P1_FORGET)
        print()
        print(contrasts.report(aucs, rows))


def _cmd_reference(args: argparse.Namespace) -> None:
    from .reference import ReleaseSettings, load_release
    from .reference_bench import report, run_reference
    from .unlearning import DigitsBench, FiaSettings

    if args.n < 1 or args.sample_steps < 1:
        raise InvalidInputError("--n and --sample-steps must be at least 1")
    settings = ReleaseSettings(FiaSettings(r1=args.r1, r2=args.r2, alpha=args.alpha, pairs=args.pairs), args.seed)
    settings.validate()
    release = load_release(args.release)
    bench = DigitsBench(args.model, images_per_digit=args.n, seeds=tuple(args.seeds), sample_steps=args.sample_steps)
    run, theirs = run_reference(bench, release, settings, differences=args.differences)
    if args.save_mask:
        theirs.save(args.save_mask)
    print(report(run))


def _parser() -> argparse.ArgumentParser:
    from .attacks import ATTACKS
    from .attacks.targets import DEFAULT_METHODS, METHODS
    from .diagnose import CONTRASTS
    from .mask_oracle import LAYER_SETS, OBJECTIVES, OracleSettings
    from .sampling import DEFAULT_STEPS
    from .unlearning import FiaSettings

    FIA_DEFAULTS = FiaSettings()  # noqa: N806  (read-only defaults for the help texts)
    ORACLE_DEFAULTS = OracleSettings()  # noqa: N806
    parser = Parser(prog="python -m bench.digits", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="library notices and info logs too")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="unlearn two digits at once; print before/after and write a grid")
    p.add_argument("--forget", default="zero, eight", help="digit words, comma-separated")
    p.add_argument("--n", type=int, default=8, help="images per digit")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="DDIM steps of the samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/demo")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("benchmark", help="P1 and P2: every method side by side on the bundled model")
    p.add_argument("--model", default=str(MODEL_DIR))
    p.add_argument("--protocols", nargs="+", default=["p1", "p2"], choices=["p1", "p2"])
    p.add_argument(
        "--methods",
        nargs="+",
        default=["fia-fast", "fia-exact", "union", "scapre", "uce"],
        choices=["fia-fast", "fia-exact", "union", "scapre", "uce"],
        help="rows besides the original model ('union' needs fia-fast)",
    )
    p.add_argument("--n", type=int, default=50, help="P1 images per digit and seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="P1 seeds")
    p.add_argument("--p2-n", type=int, default=50, help="P2 images per digit and seed")
    p.add_argument("--p2-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--p2-k", type=int, nargs="+", default=list(range(1, 10)), help="forget sizes of P2")
    p.add_argument("--sample-steps", type=int, default=DEFAULT_STEPS, help="DDIM steps of the judged samples")
    p.add_argument("--pairs", type=int, default=FIA_DEFAULTS.pairs, help="FIA prompt pairs per concept")
    p.add_argument("--r2", type=ratio_arg("r2"), default=FIA_DEFAULTS.r2)
    p.add_argument("--alpha", type=ratio_arg("alpha"), default=FIA_DEFAULTS.alpha)
    p.add_argument("--report", default="", help="RESULTS.md to update (its digits section)")
    p.add_argument("--plot", default=str(Path("bench") / "digits_p2.png"), help="PNG of the P2 curves")
    p.add_argument("--save", default="", help="folder to save the rows in (p1.json, p2.json) for `report`")
    p.set_defaults(func=_cmd_benchmark)

    p = sub.add_parser("report", help="write the P1/P2 sections from runs saved by `benchmark --save`")
    p.add_argument("--p1", nargs="+", default=[], help="saved P1 runs (merged)")
    p.add_argument("--p2", nargs="+", default=[], help="saved P2 runs, e.g. one per range of k (merged)")
    p.add_argument("--p1-heading", default="", help="RESULTS.md section heading for the P1 rows (default: section 3's)")
    p.add_argument("--p2-heading", default="", help="RESULTS.md section heading for the P2 rows (default: section 4's)")
    p.add_argument("--report", default="", help="RESULTS.md to update")
    p.add_argument("--plot", default=str(Path("bench") / "digits_p2.png"), help="PNG of the P2 curves")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("sweep-pairs", help="P1 with FIA fast at several prompt-pair counts K")
    p.add_argument("--model", default=str(MODEL_DIR))
    p.add_argument("--pairs", type=int, nargs="+", default=[2, 5, 10, 20])
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sample-steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--report", default="")
    p.set_defaults(func=_cmd_sweep_pairs)

    p = sub.add_parser("diagnose-fia", help="P1 with other base prompts, larger r2 and a random-mask control")
    p.add_argument("--model", default=str(MODEL_DIR))
    p.add_argument("--r2", type=ratio_arg("r2"), nargs="+", default=[0.01, 0.03, 0.1])
    p.add_argument("--contrasts", nargs="+", default=list(CONTRASTS), choices=list(CONTRASTS))
    p.add_argument("--n", type=int, default=10, help="images per digit and seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--sample-steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--report", default="")
    p.set_defaults(func=_cmd_diagnose_fia)

    p = sub.add_parser("mask-oracle", help="P1 with a mask LEARNED on FFN2 (and on to_v, the control), next to FIA")
    p.add_argument("--model", default=str(MODEL_DIR))
    p.add_argument("--layers", nargs="+", default=list(LAYER_SETS), choices=list(LAYER_SETS))
    p.add_argument("--steps", type=int, default=ORACLE_DEFAULTS.steps, help="optimiser steps per layer set")
    p.add_argument("--sparsity", type=float, default=ORACLE_DEFAULTS.sparsity)
    p.add_argument(
        "--objective", default=ORACLE_DEFAULTS.objective, choices=list(OBJECTIVES),
        help="what the forgotten prompts are distilled onto: the base prompt, or the kept digits (%(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--budget", type=float, default=ORACLE_DEFAULTS.budget,
        help="largest pruned share of the layers' weights (0: every gate below 1/2; the gate of issue 12: 0.05)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=ORACLE_DEFAULTS.seed, help="seed of the mask's training")
    p.add_argument(
        "--fia-r2", type=ratio_arg("fia-r2"), default=0.03, help="r2 of the FIA row shown next to the learned FFN2 mask"
    )
    p.add_argument("--n", type=int, default=20, help="images per digit and seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--sample-steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--report", default="")
    p.set_defaults(func=_cmd_mask_oracle)

    p = sub.add_parser("gate", help="issue 12's gate: can a learned FFN2 mask of <= 5 %% forget P1 on this model?")
    p.add_argument("--model", default=str(MODEL_DIR))
    p.add_argument("--name", required=True, help="the model's name in the gate table")
    p.add_argument("--description", default="", help="what was tried, for the gate table")
    p.add_argument("--objective", default="kept", choices=list(OBJECTIVES))
    p.add_argument("--budget", type=float, default=0.05, help="largest pruned share of the FFN2 weights")
    p.add_argument("--steps", type=int, default=ORACLE_DEFAULTS.steps)
    p.add_argument("--sparsity", type=float, default=ORACLE_DEFAULTS.sparsity)
    p.add_argument("--seed", type=int, default=ORACLE_DEFAULTS.seed)
    p.add_argument("--n", type=int, default=20, help="images per digit and seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--sample-steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--save", dest="save_rows", default="", help="JSON file the row is appended to")
    p.add_argument("--save-mask", default="", help="write the learned mask as an FIA mask file")
    p.add_argument(
        "--hard-from", type=float, default=0.5,
        help="share of the steps after which the gates are binary (straight-through), budget included",
    )  # fmt: skip
    p.set_defaults(func=_cmd_gate)

    p = sub.add_parser("gate-table", help="the gate table from saved gate rows")
    p.add_argument("--rows", nargs="+", required=True)
    p.add_argument("--command", default="python -m bench.digits gate ...", help="the commands, for the section")
    p.add_argument("--report", default="")
    p.set_defaults(func=_cmd_gate_table)

    p = sub.add_parser(
        "attack", help="issue 15: do erased digits stay erased? Attacks on the P1 edits and the original"
    )
    p.add_argument("--model", default=str(MODEL_DIR))
    p.add_argument(
        "--attack", nargs="*", default=list(ATTACKS), choices=list(ATTACKS),
        help="attacks to run (none: only the models' forget / preserve accuracy)",
    )  # fmt: skip
    p.add_argument(
        "--method", nargs="+", default=list(DEFAULT_METHODS), choices=list(METHODS),
        help="edits to attack (fia: FIA fast at the benchmark's settings; not in the default, it does not forget on v4)",
    )  # fmt: skip
    p.add_argument(
        "--mask", default="", help="the learned FFN2 mask (`gate --save-mask`); default: learn one (--mask-steps)"
    )
    p.add_argument("--mask-steps", type=int, default=600, help="steps of the learned mask when --mask is not given")
    p.add_argument("--save-mask", default=str(Path("bench") / "_work" / "attacks" / "learned_ffn2_p1.safetensors"))
    p.add_argument("--n", type=int, default=20, help="images per digit and seed (forget / preserve, refill rows)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--wording-n", type=int, default=6, help="images per wording prompt, erased digit and seed")
    p.add_argument("--embedding-n", type=int, default=10, help="images per digit, seed and budget")
    p.add_argument("--budgets", type=int, nargs="+", default=[0, 25, 100], help="embedding attack: optimiser steps")
    p.add_argument("--batch", type=int, default=16, help="embedding attack: images per step")
    p.add_argument("--lr", type=float, default=0.02, help="embedding attack: Adam's step")
    p.add_argument("--retrain-steps", type=int, default=100, help="refill by training: Adam steps")
    p.add_argument("--retrain-lr", type=float, default=1e-3, help="refill by training: Adam's step")
    p.add_argument("--decoy-seed", type=int, default=0)
    p.add_argument("--sample-steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--report", default="", help="RESULTS.md to update (section 13)")
    p.add_argument("--plot", default=str(Path("bench") / "digits_attacks.png"))
    p.add_argument("--save-run", default="", help="JSON file for the run's numbers (attack-report rewrites from it)")
    p.set_defaults(func=_cmd_attack)

    p = sub.add_parser("attack-report", help="section 13 and its plot again, from a run saved by `attack --save`")
    p.add_argument("run")
    p.add_argument("--report", default="")
    p.add_argument("--plot", default=str(Path("bench") / "digits_attacks.png"))
    p.set_defaults(func=_cmd_attack_report)

    p = sub.add_parser("compare-masks", help="two masks of one model, layer by layer: sizes, overlap, IoU")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--name-a", default="A")
    p.add_argument("--name-b", default="B")
    p.set_defaults(func=_cmd_compare_masks)

    p = sub.add_parser(
        "saliency-check", help="does FIA's saliency rank a learned FFN2 mask's weights high? (P1, layer by layer)"
    )
    p.add_argument("learned", help="the learned mask of this model (gate --save-mask)")
    _add_p1_judging_args(p)
    p.add_argument(
        "--contrasts",
        nargs="*",
        choices=["paper", "no-margin", "two-sided"],
        default=[],
        help="also FIA fast with these column contrasts on the same collection (bench/digits/contrasts.py)",
    )
    p.add_argument("--r2", nargs="+", type=ratio_arg("r2"), default=[0.01, 0.02], help="r2 of the --contrasts rows")
    p.set_defaults(func=_cmd_saliency_check)

    p = sub.add_parser(
        "reference", help="P1 with the FIA authors' code (a folder you fetched) next to the engine's FIA"
    )
    p.add_argument("release", help="folder of github.com/kaiyuan02415/Forget-It-All (the one holding fia/)")
    _add_p1_judging_args(p)
    p.add_argument("--r1", type=ratio_arg("r1"), default=0.05)
    p.add_argument("--r2", type=ratio_arg("r2"), default=FIA_DEFAULTS.r2)
    p.add_argument("--alpha", type=ratio_arg("alpha"), default=FIA_DEFAULTS.alpha)
    p.add_argument("--pairs", type=int, default=FIA_DEFAULTS.pairs, help="prompt pairs per digit (at most 10)")
    p.add_argument("--seed", type=int, default=1244, help="the release's seed (its configs use 1244)")
    p.add_argument(
        "--differences", action="store_true", help="also run the release with each difference set to the engine's"
    )
    p.add_argument("--save-mask", default="", help="write the release's mask here (an FIA mask file)")
    p.set_defaults(func=_cmd_reference)

    p = sub.add_parser("train", help="train the model from scratch (CPU, seeded)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--snapshot-every", type=int, default=0)
    p.add_argument("--init-from", default="", help="continue from a saved model folder")
    p.add_argument("--spec", default="digits", choices=["digits", "proxy"], help="which model to build (model.SPECS)")
    p.add_argument(
        "--ffn-sparsity", type=float, default=0.0, help="weight of the FFN activation sparsity penalty (0: none)"
    )
    p.add_argument(
        "--cross-attention-gain",
        type=float,
        default=1.0,
        help="< 1: freeze attn2.to_v/to_out and scale the output (text reaches the image weakly)",
    )
    p.add_argument("--freeze-text-encoder", action="store_true", help="do not train the text encoder in this phase")
    p.add_argument("--snapshot-dir", default="bench/_work/digits_snapshot")
    p.add_argument("--out", default=str(MODEL_DIR))
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("generate", help="sample PNGs for one prompt")
    p.add_argument("--prompt", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--scale", type=int, default=4, help="nearest-neighbour enlargement of PNGs")
    p.add_argument("--mask", default="", help="an FIA mask (or ScaPre edit) file to apply before sampling")
    _add_sampling_args(p, n=16)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("judge-accuracy", help="the judge's accuracy on held-out real digits")
    p.add_argument("--renders", type=int, default=3, help="random renders per test digit")
    p.set_defaults(func=_cmd_judge_accuracy)

    p = sub.add_parser("check-model", help="judge samples of every digit, several wordings")
    _add_sampling_args(p, n=20, many_seeds=True)
    p.set_defaults(func=_cmd_check_model)
    return parser


def _check_outputs(args: argparse.Namespace) -> None:
    for name in _OUTPUT_FOLDERS:
        if getattr(args, name, ""):
            check_output_dir(getattr(args, name), exist_ok=True, what=f"--{name}")
    for name in _OUTPUT_FILES:
        if getattr(args, name, ""):
            check_output_file(getattr(args, name), overwrite=True, what=f"--{name.replace('_', '-')}")


def _run(args: argparse.Namespace) -> None:
    _check_outputs(args)
    args.func(args)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log_format = "%(asctime)s %(name)s %(levelname)s %(message)s"
    setup_output(args.verbose, own_loggers=("bench", "fia_engine"), own_level=logging.INFO, log_format=log_format)
    return run_command(_run, args)


if __name__ == "__main__":
    with exit_on_user_error():
        sys.exit(main())
