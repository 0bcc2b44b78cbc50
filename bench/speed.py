"""Speed and memory of the saliency collection against the bare UNet work it needs.

    python -m bench.speed                       # CPU, small UNet with SD 1.5's block layout
    python -m bench.speed --arch sd15 --device cuda --dtype fp16 --pairs 30 --concepts 1 10

Weights are random: timing does not depend on their values. For each mode (fast, exact)
and concept count the script times, after a warm-up, `repeats` runs of

  floor       the bare batched UNet forwards of the same work: same rows, same chunks, same
              saliency steps, classifier-free guidance doubling the batch, no hooks;
  collection  fia_engine.diffusers_runner.collect_saliency (prompt encoding, hooks,
              statistics, scheduler steps, result)

and reports the median of each, their ratio (the floor ratio), seconds per concept, and the
extra peak memory of the collection over the floor (CUDA: max_memory_allocated; CPU: peak
resident set size, sampled). Then it times localisation on the new saliency (r2 0.01; what is
computed there is cached on the saliency) and the interactive loop after it: re-localise with
another r2, fuse, and build every pruned weight (what Apply Mask needs), without recollecting.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fia_engine.command_line import Parser, exit_on_user_error, run_command, setup_output

with exit_on_user_error():  # Ctrl-C while torch is imported (seconds) ends in one line too
    import torch

    from bench.report import append_text
    from fia_engine import find_target_layers, fuse, localize_concepts
    from fia_engine.devices import check_device
    from fia_engine.diffusers_runner import CollectionSettings, DiffusersComponents, collect_saliency, parse_dtype
    from fia_engine.output_paths import check_output_file
    from fia_engine.prompts import PLACES, build_prompt_plan

logger = logging.getLogger("bench.speed")

ARCHS = {
    # SD 1.5's layout (16 FFN2 layers) at a quarter of its widths: runs on 2 CPU cores.
    "small": dict(block_out_channels=(64, 128, 256, 256), attention_head_dim=8, sample_size=16),
    "sd15": dict(block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8, sample_size=64),
}


@dataclass
class Row:
    arch: str
    mode: str
    concepts: int
    rows: int
    floor_s: float
    collect_s: float
    extra_mb: float
    localize_s: float
    relocalize_s: float

    @property
    def ratio(self) -> float:
        return self.collect_s / self.floor_s


def build_components(arch: str, device: str, dtype: torch.dtype) -> DiffusersComponents:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from fia_engine.testing import tiny_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768, layers_per_block=2, **ARCHS[arch])
    unet = unet.to(device, dtype).eval()
    tokenizer = tiny_tokenizer(max_length=77)
    # One layer: the prompt encoder is not what is measured, but its output has SD's shape.
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=768,
        intermediate_size=768,
        num_hidden_layers=1,
        num_attention_heads=12,
        max_position_embeddings=77,
    )
    text_encoder = CLIPTextModel(config).to(device, dtype).eval()
    scheduler = {
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "num_train_timesteps": 1000,
    }
    return DiffusersComponents(unet, text_encoder, tokenizer, scheduler, latent_scale=8, source=f"random {arch}")


class PeakMemory:
    """Peak memory above the level at entry: CUDA allocator stats, or sampled RSS on the CPU."""

    def __init__(self, device: str):
        self.device = device
        self.peak = 0

    def __enter__(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            import psutil

            self._process = psutil.Process()
            self._base = self._process.memory_info().rss
            self._running = True
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while self._running:
            self.peak = max(self.peak, self._process.memory_info().rss - self._base)
            time.sleep(0.005)

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._base
        else:
            self._running = False
            self._thread.join()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def bare_forwards(components: DiffusersComponents, rows: int, settings: CollectionSettings) -> None:
    """The UNet calls the collection makes, with nothing else: the floor."""
    unet, device, dtype = components.unet, components.device, components.dtype
    size = (settings.resolution or unet.config.sample_size * 8) // 8
    latents = torch.randn(rows, unet.config.in_channels, size, size, device=device, dtype=dtype)
    context = torch.randn(rows, 77, 768, device=device, dtype=dtype)
    for step in range(settings.saliency_steps):
        timestep = torch.tensor(999 - 20 * step, device=device)
        for start in range(0, rows, settings.batch_size):
            part = slice(start, min(rows, start + settings.batch_size))
            batch = torch.cat([latents[part], latents[part]])
            _ = unet(batch, timestep, encoder_hidden_states=torch.cat([context[part], context[part]])).sample


def timed(fn, device: str) -> tuple[float, int, object]:
    with PeakMemory(device) as memory:
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        elapsed = time.perf_counter() - start
    return elapsed, memory.peak, result


def measure(components, arch: str, mode: str, n_concepts: int, settings: CollectionSettings, repeats: int) -> Row:
    concepts = [f"{PLACES[i]} thing" for i in range(n_concepts)]
    settings = CollectionSettings(**{**settings.__dict__, "mode": mode})
    plan = build_prompt_plan(concepts, "custom", settings.pairs, "a {concept} near a {context}", "a {context}")
    rows = len(plan.samples)
    device = str(components.device)

    def collect():
        return collect_saliency(components, concepts, settings, plan=plan)

    def floor():
        return bare_forwards(components, rows, settings)

    collect(), floor()  # warm-up: allocator, kernels, caches
    floor_runs, collect_runs, floor_peak, collect_peak, saliency = [], [], 0, 0, None
    for _ in range(repeats):  # interleaved, so drift hits both alike
        seconds, peak, _ = timed(floor, device)
        floor_runs.append(seconds)
        floor_peak = max(floor_peak, peak)
        seconds, peak, saliency = timed(collect, device)
        collect_runs.append(seconds)
        collect_peak = max(collect_peak, peak)
    layers = find_target_layers(components.unet)
    start = time.perf_counter()
    localize_concepts(saliency, settings.r1, 0.01)
    _sync(device)
    localize_s = time.perf_counter() - start
    relocalize = []
    for r2 in (0.007, 0.012, 0.01):
        start = time.perf_counter()
        mask = fuse(localize_concepts(saliency, settings.r1, r2), alpha=0.6)
        for layer in layers:
            mask.masked_weight(layer.canonical, layer.module.weight)
        _sync(device)
        relocalize.append(time.perf_counter() - start)
    return Row(
        arch,
        mode,
        n_concepts,
        rows,
        statistics.median(floor_runs),
        statistics.median(collect_runs),
        max(0, collect_peak - floor_peak) / 2**20,
        localize_s,
        statistics.median(relocalize),
    )


def table(rows: list[Row], header: str) -> str:
    lines = [
        header,
        "",
        "| arch | mode | concepts | prompt rows | floor s | collection s | floor ratio | s / concept "
        "| extra peak MiB | localise s | re-localise+fuse+apply s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.arch} | {r.mode} | {r.concepts} | {r.rows} | {r.floor_s:.3f} | {r.collect_s:.3f} | "
            f"{r.ratio:.3f} | {r.collect_s / r.concepts:.3f} | {r.extra_mb:.1f} | {r.localize_s:.3f} | "
            f"{r.relocalize_s:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = Parser(
        prog="python -m bench.speed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", choices=sorted(ARCHS), default="small")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    parser.add_argument("--dtype", default=None, help="fp32 / fp16 / bf16 (default: fp16 on cuda, fp32 on cpu)")
    parser.add_argument("--concepts", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--modes", nargs="+", default=["fast", "exact"], choices=["fast", "exact"])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--saliency-steps", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=None, help="pixels (default: the arch's native size)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--report", type=Path, default=None, help="append the table to this markdown file")
    parser.add_argument("-v", "--verbose", action="store_true", help="library notices and info logs too")
    args = parser.parse_args(argv)
    setup_output(args.verbose, own_loggers=("bench", "fia_engine"), own_level=logging.INFO)
    return run_command(_run, args)


def _run(args) -> int:
    if args.report:
        check_output_file(args.report, overwrite=True, what="--report")
    args.device = check_device(args.device)
    dtype = parse_dtype(args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32"))
    components = build_components(args.arch, args.device, dtype)
    settings = CollectionSettings(
        pairs=args.pairs,
        steps=50,
        saliency_steps=args.saliency_steps,
        cfg=7.5,
        resolution=args.resolution,
        batch_size=args.batch_size,
    )
    rows = [
        measure(components, args.arch, mode, n, settings, args.repeats) for mode in args.modes for n in args.concepts
    ]
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()}"
    header = (
        f"### bench.speed --arch {args.arch} on {device_name}, {str(dtype).replace('torch.', '')}, "
        f"torch {torch.__version__}, {datetime.date.today()}\n\nK={args.pairs} pairs, {args.saliency_steps} "
        f"saliency steps of 50, cfg 7.5 (batch doubled), chunks of {args.batch_size}, resolution "
        f"{args.resolution or ARCHS[args.arch]['sample_size'] * 8} px, random weights, median of {args.repeats}."
    )
    text = table(rows, header)
    print(text)
    if args.report:
        append_text(args.report, "\n" + text + "\n")
    return 0


if __name__ == "__main__":
    with exit_on_user_error():
        raise SystemExit(main())
