"""Edits as standard files (issue 14): LoRA size and rank, bake's peak memory, digits P1 through diffusers.

    python -m bench.edit_files --checkpoint ~/.cache/fia-tests/sd15-random-s0.safetensors --report bench/RESULTS.md

The SD 1.5 model is a single-file checkpoint (``--checkpoint``; the random SD 1.5 fp16 file
the integration tests cache, made by tests/integration/comfy_checkpoints.py): its 32 to_k /
to_v and 16 FFN2 weights are read from the file one by one, so no 3.4 GB UNet is built.

1. ScaPre edits for 1, 10 and 50 concepts on those RANDOM weights with RANDOM CLIP-shaped
   token rows (bench/scapre_scale.random_token_rows), exported with ``export_lora`` in both
   spellings: file size, rank per layer, and how far the LoRA's delta (read back from the
   file) is from the edit's.
2. ``python -m fia_engine bake`` on the checkpoint, once with a random mask (1 % of every
   FFN2 layer) and once with the 50-concept edit: the child process's peak RSS (getrusage),
   next to that of a process that only imports the engine.
3. Digits P1 at reduced size (forget zero..four; ``--digits-n`` images per digit): the ScaPre
   edit of the benchmark applied in memory (as in RESULTS section 3), by ``apply`` on the
   model folder, and exported as a LoRA and loaded by diffusers' ``load_lora_weights``
   (fia_engine.testing.lora_loader, needs peft): accuracies and the largest weight difference.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.report import write_section
from bench.scapre_scale import random_token_rows
from fia_engine.cli import main as fia_main
from fia_engine.layers import shape_fingerprint
from fia_engine.ldm_checkpoint import CROSS_ATTENTION, FFN2, find_checkpoint_layers
from fia_engine.masks import FIAMask
from fia_engine.safetensors_stream import read_header
from fia_engine.scapre import ScaPreSettings, compute_edit
from fia_engine.scapre.layers import weight_mean_abs
from fia_engine.scapre.lora import export_lora

logger = logging.getLogger("bench.edit_files")

REPORT_HEADING = "## 12. Edits as standard files: LoRA and baked checkpoints (issue 14)"
WORK = Path("bench/_work/edit_files")


def lora_delta_error(path: Path, edit, format: str) -> float:
    """Largest |(alpha / rank) up @ down - delta| over every layer, read back from the LoRA file."""
    from safetensors.torch import load_file

    from fia_engine.scapre.layers import projection_to_diffusers

    tensors, worst = load_file(str(path)), 0.0
    for name in edit.layers:
        module = projection_to_diffusers(name)
        if format == "comfy":
            key = "lora_unet_" + module.replace(".", "_")
            if f"{key}.lora_up.weight" not in tensors:
                continue
            up, down = tensors[f"{key}.lora_up.weight"], tensors[f"{key}.lora_down.weight"]
            up = up * (float(tensors[f"{key}.alpha"]) / down.shape[0])
        else:
            if f"unet.{module}.lora_B.weight" not in tensors:
                continue
            up, down = tensors[f"unet.{module}.lora_B.weight"], tensors[f"unet.{module}.lora_A.weight"]
        worst = max(worst, float((up @ down - edit.delta(name)).abs().max()))
    return worst


def checkpoint_weights(header, kind: str) -> tuple[dict[str, torch.Tensor], str]:
    """canonical name -> float32 weight of the checkpoint's FFN2 or to_k / to_v layers, and the family."""
    layers = find_checkpoint_layers(header, kind)
    return {name: header.read_tensor(key).float() for name, key in layers.keys.items()}, layers.family


def lora_sizes(checkpoint: Path, counts: list[int], preserve: int, out: list[str]) -> dict:
    """The LoRA table; returns the edit files and a random mask for the checkpoint, for the bake."""
    header = read_header(checkpoint)
    weights, _ = checkpoint_weights(header, CROSS_ATTENTION)
    mask = random_mask(*checkpoint_weights(header, FFN2))
    edits = {}
    out(f"{'concepts':>8} {'rows':>5} {'layers':>6} {'ranks':>9} {'edit B':>11} {'comfy B':>11} {'diffusers B':>12}")
    out(f"{'':>8} {'':>5} {'':>6} {'':>9} {'':>11} {'max |dD|':>11} {'max |dD|':>12}")
    for count in counts:
        rows = random_token_rows(count, preserve)
        edit = compute_edit(
            weights,
            rows["concepts"],
            rows["anchors"],
            rows["preserve"],
            ScaPreSettings(),
            rows["empty"],
            concept_ids=rows["concept_ids"],
            metadata={"concepts": [f"random concept {i}" for i in range(count)], "source": "bench.edit_files"},
        )
        edit_path = edit.save(WORK / f"edit-{count}.safetensors")
        sizes, errors = {}, {}
        for format in ("comfy", "diffusers"):
            path = WORK / f"lora-{count}-{format}.safetensors"
            written = export_lora(edit, path, format, overwrite=True)
            sizes[format], errors[format] = written["bytes"], lora_delta_error(path, edit, format)
        ranks = sorted(written["ranks"].values())
        out(
            f"{count:>8} {len(rows['concepts']):>5} {len(written['ranks']):>6} {f'{ranks[0]}..{ranks[-1]}':>9} "
            f"{edit_path.stat().st_size:>11,} {sizes['comfy']:>11,} {sizes['diffusers']:>12,}"
        )
        out(f"{'':>8} {'':>5} {'':>6} {'':>9} {'':>11} {errors['comfy']:>11.2g} {errors['diffusers']:>12.2g}")
        edits[count] = edit_path
    out(f"dense float32 delta of the same {len(weights)} layers: {edit.dense_bytes:,} B")
    return {"edits": edits, "mask": mask.save(WORK / "random-mask.safetensors")}


def random_mask(weights: dict[str, torch.Tensor], family: str, fraction: float = 0.01) -> FIAMask:
    generator = torch.Generator().manual_seed(0)
    indices = {
        name: torch.randperm(w.numel(), generator=generator)[: int(fraction * w.numel())].sort().values
        for name, w in weights.items()
    }
    shapes = {name: tuple(w.shape) for name, w in weights.items()}
    signature = {name: weight_mean_abs(w) for name, w in weights.items()}
    metadata = {"concepts": ["random"], "note": "1 % of each FFN2 layer at random (bench.edit_files)"}
    return FIAMask(indices, shapes, family, shape_fingerprint(shapes), signature, metadata)


# Linux keeps a process's peak RSS across exec, so a child forked from this (large) process
# would report at least this process's size: a small launcher starts the measured command.
_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
_, status, usage = os.wait4(child.pid, 0)
code = os.waitstatus_to_exitcode(status)
sys.stderr.write(child.stderr.read().decode())
print(usage.ru_maxrss * 1024, code)
"""


def peak_rss(command: list[str]) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of a command run as a grandchild of a small launcher."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _LAUNCHER, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    rss, code = (int(v) for v in done.stdout.split())
    if code:
        raise RuntimeError(f"{' '.join(command)} exited {code}: {done.stderr.strip()}")
    return rss, seconds


def bake_memory(checkpoint: Path, made: dict, out: list[str]) -> None:
    header = read_header(checkpoint)
    size = checkpoint.stat().st_size
    largest = max(entry.nbytes for entry in header.entries.values())
    baseline, _ = peak_rss([sys.executable, "-c", "import fia_engine.cli, fia_engine.bake"])
    out(f"checkpoint: {checkpoint.name}, {size:,} B ({size / 2**30:.2f} GiB), {len(header.entries)} tensors,")
    out(f"header {header.data_start:,} B, largest tensor {largest:,} B")
    out(f"a process that only imports the engine (torch included): peak RSS {baseline / 2**20:.0f} MiB")
    jobs = {
        "mask (1 % of FFN2)": ["--mask", str(made["mask"])],
        "edit (50 concepts)": ["--edit", str(made["edits"][50])],
    }
    for what, source in jobs.items():
        target = WORK / "baked.safetensors"
        command = [sys.executable, "-m", "fia_engine", "bake", "--checkpoint", str(checkpoint), *source]
        rss, seconds = peak_rss([*command, "--out", str(target), "--overwrite"])
        written = target.stat().st_size
        target.unlink()
        out(
            f"bake {what:<19}: peak RSS {rss / 2**20:.0f} MiB ({rss / size:.3f} of the file), {seconds:.1f} s, "
            f"wrote {written:,} B"
        )


def digits_lora(images_per_digit: int, seeds: tuple[int, ...], out: list[str]) -> None:
    try:
        import peft  # noqa: F401  (diffusers loads LoRAs through it)
    except ImportError:
        raise SystemExit("diffusers' load_lora_weights needs peft: pip install peft") from None
    from diffusers import UNet2DConditionModel

    from bench.digits import MODEL_DIR
    from bench.digits.benchmark import P1_FORGET
    from bench.digits.methods import SCAPRE, scapre_group
    from bench.digits.unlearning import DigitsBench, Row, mean_std
    from fia_engine.testing import lora_loader

    bench = DigitsBench(MODEL_DIR, images_per_digit=images_per_digit, seeds=seeds)
    made = scapre_group(("scapre",))(bench, P1_FORGET)[SCAPRE]
    edit_path = made.made.save(WORK / "digits-p1.safetensors")
    applied = WORK / "digits-p1-applied"
    shutil.rmtree(applied, ignore_errors=True)
    assert fia_main(["apply", "--pipeline", str(MODEL_DIR), "--mask", str(edit_path), "--out", str(applied)]) == 0
    unets = {
        "original": bench.engine.unet,
        "edit applied in memory": made.unet,
        "apply (model folder, fp16)": UNet2DConditionModel.from_pretrained(str(applied / "unet")).eval(),
    }
    for format in ("diffusers", "comfy"):
        lora = export_lora(made.made, WORK / f"digits-p1-{format}.safetensors", format, overwrite=True)["path"]
        unet = UNet2DConditionModel.from_pretrained(str(MODEL_DIR / "unet")).eval()
        lora_loader(unet).load_lora_weights(str(lora))
        unets[f"LoRA ({format}) via load_lora_weights"] = unet
    reference = made.unet.state_dict()
    out(f"P1: forget zero..four, keep five..nine; {images_per_digit} images per digit, seeds {list(seeds)}")
    out(f"{'':<40} {'forget acc %':>12} {'preserve acc %':>14} {'max |dW| vs in memory':>22}")
    for name, unet in unets.items():
        row = Row(name, list(P1_FORGET), bench.accuracy(unet), 0.0, 0.0)
        if name.startswith("LoRA"):
            unet = copy.deepcopy(unet)
            unet.fuse_lora()
            unet.unload_lora()
        state = unet.state_dict()
        diff = max(float((state[k].float() - v).abs().max()) for k, v in reference.items())
        forget, preserve = mean_std(row.forget_acc())[0], mean_std(row.preserve_acc())[0]
        out(f"{name:<40} {100 * forget:>12.1f} {100 * preserve:>14.1f} {diff:>22.3g}")
    shutil.rmtree(applied, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.edit_files", description=__doc__.split("\n\n")[0])
    parser.add_argument("--concepts", type=int, nargs="+", default=[1, 10, 50], help="concept counts (1 10 50)")
    parser.add_argument("--preserve", type=int, default=10, help="preserve concepts per edit (10)")
    parser.add_argument("--checkpoint", type=Path, required=True, help="SD 1.5 single-file checkpoint")
    parser.add_argument("--digits-n", type=int, default=10, help="digits P1: images per digit (10); 0 skips it")
    parser.add_argument("--digits-seeds", type=int, nargs="+", default=[0], help="digits P1 seeds (0)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    parser.add_argument("--report", default="", help="RESULTS.md whose section 12 to replace")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    if 50 not in args.concepts:
        parser.error("the bake measurement uses the 50-concept edit: keep 50 in --concepts")

    lines: list[str] = []
    out = lines.append
    out(f"torch {torch.__version__}, {args.threads} CPU thread(s), {datetime.date.today().isoformat()}")
    out("")
    out(f"1. ScaPre edit -> LoRA on {args.checkpoint.name} (SD 1.5, RANDOM weights), RANDOM CLIP-shaped token rows")
    out(f"   (engine defaults, {args.preserve} preserve concepts; B = bytes on disk, float32 factors)")
    made = lora_sizes(args.checkpoint, args.concepts, args.preserve, out)
    out("")
    out("2. bake: streamed, peak RSS of the `python -m fia_engine bake` process")
    bake_memory(args.checkpoint, made, out)
    if args.digits_n:
        out("")
        out("3. digits P1 at reduced size: the benchmark's ScaPre edit, four ways")
        digits_lora(args.digits_n, tuple(args.digits_seeds), out)
    text = "\n".join(lines)
    sys.stdout.write(text + "\n")
    if args.report:
        command = "python -m bench.edit_files " + " ".join(argv if argv is not None else sys.argv[1:])
        write_section(Path(args.report), f"{REPORT_HEADING}\n\nCommand: `{command}`\n\n```\n{text}\n```\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
