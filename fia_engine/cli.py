"""Command line: ``python -m fia_engine {unlearn,scapre,apply,export-lora,bake,info}``.

Bad input and Ctrl-C end the program with exit code 2 and one line on stderr
(fia_engine.command_line); outputs are checked before the work starts, an existing file is
replaced only with --overwrite, and no partial output is left behind (masks, edits and
folders are written under a temporary name and moved into place).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from .command_line import Parser, ratio_arg, run_command, setup_output
from .devices import check_device
from .errors import InvalidInputError
from .output_paths import check_output_dir, check_output_file
from .scapre.settings import BURES_FORMS, MASK_FORMS, SPECTRAL_FORMS, ScaPreSettings

logger = logging.getLogger("fia_engine.cli")


def _r2_overrides(text: str) -> dict[str, float]:
    """'church=0.02, golf ball=0.007' -> {'church': 0.02, 'golf ball': 0.007}."""
    overrides = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.rpartition("=")
        if not name.strip():
            raise argparse.ArgumentTypeError(f"per-concept r2 must look like 'concept=0.02', got {item!r}")
        overrides[name.strip()] = ratio_arg(f"r2 for {name.strip()!r}")(value)
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m fia_engine", description="Forget-It-All concept unlearning")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens, library notices included")
    commands = parser.add_subparsers(dest="command", required=True)

    unlearn = commands.add_parser("unlearn", help="find and fuse the weights to prune for some concepts; write a mask")
    unlearn.add_argument("--pipeline", required=True, help="local diffusers Stable Diffusion folder")
    unlearn.add_argument("--concepts", required=True, help="comma-separated concepts, e.g. 'golf ball, church'")
    unlearn.add_argument("--kind", default="object", choices=["object", "style", "explicit", "custom"])
    unlearn.add_argument("--concept-template", help="custom prompt with {concept} and optionally {context}")
    unlearn.add_argument("--base-template", help="custom base prompt (the concept left out), may use {context}")
    unlearn.add_argument("--contexts", help="comma-separated context words replacing the built-in list")
    unlearn.add_argument("--out", required=True, help="mask file to write (.safetensors)")
    unlearn.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    unlearn.add_argument("--mode", default="fast", choices=["fast", "exact"])
    unlearn.add_argument("--r1", type=ratio_arg("r1"), default=0.05, help="per-step saliency top fraction (0.05)")
    unlearn.add_argument(
        "--r2", type=ratio_arg("r2"), default=0.01, help="fraction of weights selected per concept (0.01)"
    )
    unlearn.add_argument("--r2-per-concept", type=_r2_overrides, default=None, help="'concept=0.02,...' overrides")
    unlearn.add_argument("--alpha", type=ratio_arg("alpha"), default=0.6, help="agnostic threshold fraction (0.6)")
    unlearn.add_argument("--no-agnostic-protection", action="store_true", help="prune the plain union of masks")
    unlearn.add_argument("--pairs", type=int, default=10, help="prompt pairs per concept (K)")
    unlearn.add_argument("--steps", type=int, default=50, help="length of the denoising schedule")
    unlearn.add_argument("--saliency-steps", type=int, default=10, help="first steps observed (only these run)")
    unlearn.add_argument("--cfg", type=float, default=7.5, help="classifier-free guidance scale")
    unlearn.add_argument("--include-uncond", action="store_true", help="also observe the unconditional branch")
    unlearn.add_argument("--resolution", type=int, default=None, help="pixels (default: the model's native size)")
    unlearn.add_argument("--batch-size", type=int, default=16, help="prompt samples per UNet call")
    unlearn.add_argument("--seed", type=int, default=0)
    unlearn.add_argument(
        "--timestep-spacing",
        default=None,
        choices=["leading", "linspace", "trailing"],
        help="default: the folder's scheduler config",
    )
    unlearn.add_argument(
        "--sampler",
        default="ddim",
        choices=["ddim", "euler"],
        help="trajectory sampler; euler matches ComfyUI's euler + normal schedule",
    )
    unlearn.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
    unlearn.add_argument(
        "--dtype", default=None, choices=["fp32", "fp16", "bf16"], help="default: fp16 on cuda, fp32 on cpu"
    )

    scapre = commands.add_parser(
        "scapre", help="closed-form edit of the cross-attention keys/values (ScaPre); write an edit file"
    )
    scapre.add_argument("--pipeline", required=True, help="local diffusers Stable Diffusion folder")
    scapre.add_argument("--concepts", required=True, help="comma-separated concepts, e.g. 'golf ball, church'")
    scapre.add_argument("--anchor", default="", help="what the concepts should look like instead ('' = empty prompt)")
    scapre.add_argument("--preserve", default="", help="comma-separated concepts whose outputs must stay")
    scapre.add_argument("--out", required=True, help="edit file to write (.safetensors)")
    scapre.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    defaults = ScaPreSettings()
    scapre.add_argument("--mode", default=defaults.mode, choices=["scapre", "uce"], help="uce = closed form only")
    scapre.add_argument("--preserve-weight", type=float, default=defaults.preserve_weight, help="lam (%(default)s)")
    scapre.add_argument("--ridge", type=float, default=defaults.ridge, help="gamma (%(default)s)")
    switch = argparse.BooleanOptionalAction
    scapre.add_argument("--row-mask", action=switch, default=defaults.row_mask, help="information row mask")
    scapre.add_argument(
        "--mask-form", default=defaults.mask_form, choices=list(MASK_FORMS), help="how the mask enters (%(default)s)"
    )
    scapre.add_argument("--mask-power", type=float, default=defaults.mask_power, help="p (%(default)s)")
    scapre.add_argument("--mask-temperature", type=float, default=defaults.mask_temperature, help="T (%(default)s)")
    scapre.add_argument("--spectral", action=switch, default=defaults.spectral, help="spectral weighting")
    scapre.add_argument(
        "--spectral-form", default=defaults.spectral_form, choices=list(SPECTRAL_FORMS), help="(%(default)s)"
    )
    scapre.add_argument("--spectral-rho", type=float, default=defaults.spectral_rho, help="rho (%(default)s)")
    for name, what in (("temperature", "T_sigma"), ("power", "p_sigma"), ("scale", "residual weight")):
        scapre.add_argument(
            f"--spectral-{name}",
            type=float,
            default=getattr(defaults, f"spectral_{name}"),
            help=f"release form: {what} (%(default)s)",
        )
    scapre.add_argument("--bures", action=switch, default=defaults.bures, help="Bures proximal step")
    scapre.add_argument("--bures-eta", type=float, default=defaults.bures_eta, help="eta (%(default)s)")
    scapre.add_argument(
        "--bures-form", default=defaults.bures_form, choices=list(BURES_FORMS), help="whose Bures step (%(default)s)"
    )
    scapre.add_argument("--bures-iters", type=int, default=defaults.bures_iters, help="release form (%(default)s)")
    scapre.add_argument("--entropy-blend", action=switch, default=defaults.entropy_blend, help="entropy blend")
    scapre.add_argument(
        "--blend-floor", type=float, default=defaults.blend_floor, help="least share a row keeps (%(default)s)"
    )
    scapre.add_argument("--entropy-bins", type=int, default=defaults.entropy_bins, help="histogram bins (%(default)s)")
    scapre.add_argument(
        "--output-reg", type=float, default=defaults.output_reg, help="mu; > 0 solves the Sylvester form (%(default)s)"
    )
    scapre.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
    scapre.add_argument(
        "--dtype", default=None, choices=["fp32", "fp16", "bf16"], help="default: fp16 on cuda, fp32 on cpu"
    )

    apply = commands.add_parser("apply", help="write an unlearned copy of a diffusers folder")
    apply.add_argument("--pipeline", required=True, help="source diffusers folder (never modified)")
    apply.add_argument("--mask", required=True, help="FIA mask (from 'unlearn') or ScaPre edit (from 'scapre')")
    apply.add_argument("--out", required=True, help="new folder to write")
    apply.add_argument("--strength", type=float, default=None, help="FIA masks: 0..1; 1 zeroes the pruned weights")
    apply.add_argument("--scale", type=float, default=None, help="ScaPre edits: W + scale * delta (default 1)")

    lora = commands.add_parser("export-lora", help="write a ScaPre edit as a standard LoRA file")
    lora.add_argument("--edit", required=True, help="ScaPre edit (from 'scapre')")
    lora.add_argument("--out", required=True, help="LoRA file to write (.safetensors)")
    lora.add_argument(
        "--format",
        default="comfy",
        choices=["comfy", "diffusers"],
        help="comfy: kohya names (ComfyUI, A1111, diffusers); diffusers: PEFT names for load_lora_weights",
    )
    lora.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    bake = commands.add_parser("bake", help="write a single-file checkpoint with a mask or edit built in")
    bake.add_argument("--checkpoint", required=True, help="ldm single-file .safetensors (never modified)")
    made = bake.add_mutually_exclusive_group(required=True)
    made.add_argument("--mask", help="FIA mask (from 'unlearn')")
    made.add_argument("--edit", help="ScaPre edit (from 'scapre')")
    bake.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    bake.add_argument(
        "--strength", type=float, default=1.0, help="mask: 0..1, 1 zeroes the pruned weights; edit: the scale (1)"
    )
    bake.add_argument(
        "--fill",
        choices=["zeros", "decoys"],
        default="zeros",
        help="mask only: what pruned weights become; 'decoys' writes values drawn from each row's kept weights, "
        "so the file has no zeros that show where the mask was (strength 1 only)",
    )
    bake.add_argument("--fill-seed", type=int, default=None, help="seed of the decoy draw (default: a fresh one)")
    bake.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    info = commands.add_parser("info", help="print a mask's or edit's metadata and per-layer numbers")
    info.add_argument("mask")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _progress_bar(description: str):
    from tqdm import tqdm

    # disable=None: only on a terminal; delay: shown once the first update has set the total
    bar = tqdm(desc=description, unit="call", file=sys.stderr, disable=None, delay=0.5)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, update


def run_unlearn(args) -> int:
    import torch

    from .diffusers_runner import (
        CollectionSettings,
        check_pipeline_folder,
        load_components,
        parse_dtype,
        unlearn,
    )
    from .neurons import resolve_r2
    from .prompts import build_prompt_plan
    from .timing import PhaseTimer

    check_output_file(args.out, overwrite=args.overwrite, what="--out")
    device = check_device(args.device)
    dtype = parse_dtype(args.dtype or ("fp16" if device.startswith("cuda") else "fp32"))
    settings = CollectionSettings(
        kind=args.kind,
        pairs=args.pairs,
        steps=args.steps,
        saliency_steps=args.saliency_steps,
        cfg=args.cfg,
        seed=args.seed,
        mode=args.mode,
        r1=args.r1,
        include_uncond=args.include_uncond,
        resolution=args.resolution,
        batch_size=args.batch_size,
        sampler=args.sampler,
        timestep_spacing=args.timestep_spacing,
        concept_template=args.concept_template,
        base_template=args.base_template,
        contexts=[c.strip() for c in args.contexts.split(",")] if args.contexts else None,
    )
    settings.validate()
    # Everything that can be checked without the model is checked before the slow loading.
    plan = build_prompt_plan(
        args.concepts,
        settings.kind,
        settings.pairs,
        settings.concept_template,
        settings.base_template,
        settings.contexts,
    )
    resolve_r2(plan.groups.concepts, args.r2, args.r2_per_concept)
    check_pipeline_folder(args.pipeline)
    started = time.perf_counter()
    timer = PhaseTimer(device)
    with timer.phase("load"):
        components = load_components(args.pipeline, device, dtype)
    bar, update = _progress_bar("FIA saliency")
    try:
        mask = unlearn(
            components,
            plan.groups.concepts,
            settings,
            r2=args.r2,
            alpha=args.alpha,
            r2_per_concept=args.r2_per_concept,
            protect_agnostic=not args.no_agnostic_protection,
            progress=update,
            timer=timer,
        )
    finally:
        bar.close()
    mask.metadata["source"] = str(args.pipeline)
    with timer.phase("write"):
        mask.save(args.out)
    elapsed = time.perf_counter() - started
    logger.info("time per phase: %s", timer.summary())
    print(
        f"wrote {args.out}: {len(mask.metadata['concepts'])} concepts, {mask.pruned_count} of {mask.total_count} "
        f"weights pruned ({100 * mask.pruned_fraction:.4f} %), {elapsed:.1f} s on {device} "
        f"({torch.__version__})"
    )
    return 0


def run_scapre(args) -> int:
    from .diffusers_runner import check_pipeline_folder, parse_dtype
    from .scapre.runner import check_prompts, scapre_unlearn

    check_output_file(args.out, overwrite=args.overwrite, what="--out")

    settings = ScaPreSettings(
        mode=args.mode,
        preserve_weight=args.preserve_weight,
        ridge=args.ridge,
        row_mask=args.row_mask,
        mask_form=args.mask_form,
        mask_power=args.mask_power,
        mask_temperature=args.mask_temperature,
        spectral=args.spectral,
        spectral_form=args.spectral_form,
        spectral_rho=args.spectral_rho,
        spectral_temperature=args.spectral_temperature,
        spectral_power=args.spectral_power,
        spectral_scale=args.spectral_scale,
        bures=args.bures,
        bures_eta=args.bures_eta,
        bures_form=args.bures_form,
        bures_iters=args.bures_iters,
        entropy_blend=args.entropy_blend,
        blend_floor=args.blend_floor,
        entropy_bins=args.entropy_bins,
        output_reg=args.output_reg,
    ).validate()
    check_prompts(args.concepts, args.anchor, args.preserve)
    check_pipeline_folder(args.pipeline)
    device = check_device(args.device)
    dtype = parse_dtype(args.dtype or ("fp16" if device.startswith("cuda") else "fp32"))
    started = time.perf_counter()
    edit = scapre_unlearn(args.pipeline, args.concepts, args.anchor, args.preserve, settings, device, dtype)
    edit.save(args.out)
    elapsed = time.perf_counter() - started
    summary = edit.summary()
    print(
        f"wrote {args.out}: {len(summary['concepts'])} concepts, {summary['layer_count']} layers, mode {settings.mode}, "
        f"{summary['stored_bytes']} bytes stored ({summary['dense_bytes']} dense), {elapsed:.1f} s on {device}"
    )
    return 0


def _load_mask_or_edit(path: str):
    """An FIAMask or a ScaPreEdit, told apart by the file's format metadata."""
    from .masks import FORMAT as MASK_FORMAT
    from .masks import FIAMask
    from .safetensors_files import file_format
    from .scapre.edit import FORMAT as EDIT_FORMAT
    from .scapre.edit import ScaPreEdit

    found = file_format(path)
    if found == MASK_FORMAT:
        return FIAMask.load(path)
    if found == EDIT_FORMAT:
        return ScaPreEdit.load(path)
    raise InvalidInputError(f"{path} is not an FIA mask or a ScaPre edit (format={found!r})")


def run_apply(args) -> int:
    from .diffusers_files import apply_mask_to_folder
    from .masks import FIAMask, check_strength
    from .scapre.edit import check_scale
    from .scapre.files import apply_edit_to_folder

    if args.strength is not None:
        check_strength(args.strength)
    if args.scale is not None:
        check_scale(args.scale)
    check_output_dir(args.out, exist_ok=False, what="--out")
    loaded = _load_mask_or_edit(args.mask)
    if isinstance(loaded, FIAMask):
        if args.scale is not None:
            raise InvalidInputError("--scale is for ScaPre edits; an FIA mask takes --strength (0..1)")
        strength = 1.0 if args.strength is None else args.strength
        apply_mask_to_folder(args.pipeline, loaded, args.out, strength)
        print(f"wrote {args.out}: {loaded.pruned_count} weights pruned at strength {strength}")
        return 0
    if args.strength is not None:
        raise InvalidInputError("--strength is for FIA masks; a ScaPre edit takes --scale")
    scale = 1.0 if args.scale is None else args.scale
    apply_edit_to_folder(args.pipeline, loaded, args.out, scale)
    print(f"wrote {args.out}: ScaPre edit on {len(loaded.layers)} cross-attention projections at scale {scale}")
    return 0


def run_export_lora(args) -> int:
    from .scapre.edit import ScaPreEdit
    from .scapre.lora import export_lora

    written = export_lora(_load_kind(args.edit, ScaPreEdit), args.out, args.format, args.overwrite)
    ranks = sorted(written["ranks"].values())
    print(
        f"wrote {args.out}: {args.format} LoRA, {len(ranks)} layers, rank {ranks[0]}..{ranks[-1]}, "
        f"{written['bytes']} bytes; strength 1 = the edit at scale 1"
    )
    return 0


def run_bake(args) -> int:
    from .bake import bake_checkpoint, edit_recipe, mask_recipe
    from .masks import FIAMask
    from .scapre.edit import ScaPreEdit

    if args.mask:
        recipe = mask_recipe(_load_kind(args.mask, FIAMask), args.strength, args.fill, args.fill_seed)
    elif args.fill != "zeros" or args.fill_seed is not None:
        raise InvalidInputError("--fill and --fill-seed are for masks; a ScaPre edit has no pruned weights")
    else:
        recipe = edit_recipe(_load_kind(args.edit, ScaPreEdit), args.strength)
    bake_checkpoint(args.checkpoint, recipe, args.out, args.overwrite)
    fill = f", pruned weights filled with {args.fill}" if args.mask else ""
    print(f"wrote {args.out}: {recipe.record['kind']} at strength {args.strength}{fill}, baked into {args.checkpoint}")
    return 0


def _load_kind(path: str, kind: type):
    """The file at ``path`` if it is a ``kind`` (FIAMask or ScaPreEdit); a clear error if it is the other."""
    names = {"FIAMask": "an FIA mask", "ScaPreEdit": "a ScaPre edit"}
    loaded = _load_mask_or_edit(path)
    if not isinstance(loaded, kind):
        raise InvalidInputError(f"{path} is {names[type(loaded).__name__]}, not {names[kind.__name__]}")
    return loaded


def run_info(args) -> int:
    from .masks import FIAMask

    loaded = _load_mask_or_edit(args.mask)
    if not isinstance(loaded, FIAMask):
        return _print_edit_info(args, loaded)
    mask = loaded
    summary = mask.summary()
    if args.json:
        print(json.dumps({"summary": summary, "metadata": mask.metadata}, indent=2, default=str))
        return 0
    meta = mask.metadata
    print(f"FIA mask {args.mask}")
    print(f"  model      {mask.family} (layers {mask.fingerprint})")
    print(f"  concepts   {', '.join(summary['concepts'])}")
    print(
        f"  method     {meta.get('method')} / {meta.get('mode')}  r1={meta.get('r1')}  alpha={meta.get('alpha')}  "
        f"agnostic protection={meta.get('protect_agnostic')}"
    )
    print(f"  r2         {meta.get('r2')}")
    print(
        f"  pruned     {mask.pruned_count} of {mask.total_count} ({summary['pruned_percent']:.4f} %), "
        f"agnostic kept {meta.get('agnostic_kept')}"
    )
    print("  layer                 pruned      of  percent")
    for name, fraction in summary["layers"].items():
        out, inp = mask.shapes[name]
        print(f"  {name:<18} {int(mask.indices[name].numel()):>9} {out * inp:>9}  {100 * fraction:7.4f}")
    return 0


def _print_edit_info(args, edit) -> int:
    summary = edit.summary()
    if args.json:
        print(json.dumps({"summary": summary, "metadata": edit.metadata}, indent=2, default=str))
        return 0
    settings, active = edit.metadata.get("settings", {}), edit.metadata.get("active", {})
    print(f"ScaPre edit {args.mask}")
    print(f"  model      {edit.family} (layers {edit.fingerprint})")
    print(f"  concepts   {', '.join(summary['concepts'])}")
    print(f"  anchor     {summary['anchor']!r}   preserve {', '.join(summary['preserve']) or '-'}")
    print(
        f"  method     {summary['mode']}  lam={settings.get('preserve_weight')}  gamma={settings.get('ridge')}  "
        f"steps on: {', '.join(k for k, v in active.items() if v) or 'none'}"
    )
    print(
        f"  storage    {summary['stored_bytes']} bytes ({summary['dense_bytes']} dense), "
        f"edited rows {100 * summary['edited_fraction']:.1f} %"
    )
    print("  layer                    rank   stored B  rel. change  kept (blend)")
    for name, layer in summary["layers"].items():
        rank = "dense" if layer["rank"] is None else layer["rank"]
        change = "-" if layer["relative_change"] is None else f"{layer['relative_change']:.4f}"
        blend = "-" if layer["blend"] is None else f"{layer['blend']:.3f}"
        print(f"  {name:<22} {rank:>6} {layer['stored_bytes']:>10}  {change:>11}  {blend:>5}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_output(args.verbose)
    handlers = {
        "unlearn": run_unlearn,
        "scapre": run_scapre,
        "apply": run_apply,
        "export-lora": run_export_lora,
        "bake": run_bake,
        "info": run_info,
    }
    return run_command(handlers[args.command], args)
