"""Command line of the digits benchmark model: ``python -m bench.digits <command>``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from . import MODEL_DIR


def _cmd_train(args: argparse.Namespace) -> None:
    from .train import TrainConfig, train

    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        snapshot_every=args.snapshot_every,
        init_from=args.init_from,
    )
    metadata = train(cfg, Path(args.out))
    print(json.dumps(metadata, indent=2))


def _cmd_generate(args: argparse.Namespace) -> None:
    from .sampling import generate, grid, save_pngs, slug

    images = generate(args.model, [args.prompt], args.n, args.seed, steps=args.steps, cfg=args.cfg)
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

    result = check_model(args.model, n=args.n, seed=args.seed, steps=args.steps, cfg=args.cfg)
    print(
        f"check-model: {result.images_per_digit} images per digit, seed {args.seed}, "
        f"{args.steps} DDIM steps, cfg {args.cfg}"
    )
    print(f"{'digit':<8}accuracy")
    for word, accuracy in zip(DIGIT_WORDS, result.per_digit, strict=True):
        print(f"{word:<8}{accuracy:.3f}")
    for wording in WORDINGS:
        print(f"wording {wording!r}: {result.per_wording[wording]:.3f}")
    print(f"mean over digits: {result.mean:.3f}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from .data import DIGIT_WORDS
    from .demo import run_demo

    forget = [DIGIT_WORDS.index(word.strip()) for word in args.forget.split(",")]
    print(run_demo(forget, Path(args.out), images=args.n, steps=args.steps, seed=args.seed))


def _add_sampling_args(p: argparse.ArgumentParser, n: int) -> None:
    from .sampling import DEFAULT_CFG, DEFAULT_STEPS

    p.add_argument("--model", default=str(MODEL_DIR))
    p.add_argument("--n", type=int, default=n)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--cfg", type=float, default=DEFAULT_CFG)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.digits", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="unlearn two digits at once; print before/after and write a grid")
    p.add_argument("--forget", default="three, seven", help="digit words, comma-separated")
    p.add_argument("--n", type=int, default=8, help="images per digit")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps of the samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/demo")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("train", help="train the model from scratch (CPU, seeded)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--snapshot-every", type=int, default=0)
    p.add_argument("--init-from", default="", help="continue from a saved model folder")
    p.add_argument("--out", default=str(MODEL_DIR))
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("generate", help="sample PNGs for one prompt")
    p.add_argument("--prompt", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--scale", type=int, default=4, help="nearest-neighbour enlargement of PNGs")
    _add_sampling_args(p, n=16)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("judge-accuracy", help="the judge's accuracy on held-out real digits")
    p.add_argument("--renders", type=int, default=3, help="random renders per test digit")
    p.set_defaults(func=_cmd_judge_accuracy)

    p = sub.add_parser("check-model", help="judge samples of every digit, several wordings")
    _add_sampling_args(p, n=20)
    p.set_defaults(func=_cmd_check_model)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = _parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
