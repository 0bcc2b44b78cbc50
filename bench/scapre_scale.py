"""How long ScaPre takes for many concepts at SD 1.5's size, and how large the edit file is.

    python -m bench.scapre_scale                      # 50 concepts, CUDA if available
    python -m bench.scapre_scale --concepts 10 50 100 --device cpu --sylvester --threads 1

The UNet is a diffusers UNet2DConditionModel built from SD 1.5's exact configuration
(written out below) with RANDOM weights: the closed form's cost depends on the shapes, not
on the values. No text encoder is built (a CLIP tokenizer's vocabulary is not available
offline): the token rows are RANDOM embeddings shaped like CLIP-L's final hidden states
(width 768, norm about 28, a component shared by all tokens, 1-3 word tokens plus the
end token per concept). For each mode the script times compute_edit on all 32 to_k / to_v
layers: one warm-up, then the median of ``--repeats`` runs, and reports the stored edit
bytes against the dense bytes of the same layers.
"""

from __future__ import annotations

import datetime
import logging
import statistics
import sys
import time
from pathlib import Path

from fia_engine.command_line import Parser, exit_on_user_error, run_command, setup_output

with exit_on_user_error():  # Ctrl-C while torch is imported (seconds) ends in one line too
    import torch

    from bench.report import write_section
    from fia_engine.devices import check_device
    from fia_engine.output_paths import check_output_file
    from fia_engine.scapre import ScaPreSettings, compute_edit, find_cross_attention_projections

logger = logging.getLogger("bench.scapre_scale")

# runwayml/stable-diffusion-v1-5 unet/config.json, the entries that shape the model.
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
    center_input_sample=False,
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    mid_block_scale_factor=1,
)
CLIP_WIDTH = 768
# The same layout with narrow blocks: a smoke run of this script in seconds (--tiny).
TINY_UNET = dict(SD15_UNET, block_out_channels=(32, 32, 64, 64), attention_head_dim=4, norm_num_groups=8)


def sd15_unet(device: str, tiny: bool = False) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(**(TINY_UNET if tiny else SD15_UNET)).to(device).eval()


def random_token_rows(concepts: int, preserve: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Concept, anchor (empty prompt at the same positions) and preserve rows shaped like CLIP-L's."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(CLIP_WIDTH, generator=g) * 0.6  # what every token state has in common

    def prompts(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.randint(1, 4, (count,), generator=g) + 1  # 1-3 word tokens + the end token
        rows = shared + torch.randn(int(lengths.sum()), CLIP_WIDTH, generator=g) * 0.8
        return rows * (28.0 / rows.norm(dim=1, keepdim=True)), torch.repeat_interleave(torch.arange(count), lengths)

    concept_rows, concept_ids = prompts(concepts)
    empty = shared + 0.2 * torch.randn(len(concept_rows), CLIP_WIDTH, generator=g)
    empty = empty * (28.0 / empty.norm(dim=1, keepdim=True))
    return {
        "concepts": concept_rows,
        "anchors": empty,
        "preserve": prompts(preserve)[0],
        "empty": empty,
        "concept_ids": concept_ids,
    }


REPORT_HEADING = "## 7. ScaPre at Stable Diffusion 1.5 scale (issue 5)"


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_edit(weights, rows, settings: ScaPreSettings, repeats: int, device: str):
    on_device = {k: v.to(device) for k, v in rows.items()}

    def run():
        return compute_edit(
            weights,
            on_device["concepts"],
            on_device["anchors"],
            on_device["preserve"],
            settings,
            on_device["empty"],
            concept_ids=on_device["concept_ids"],
        )

    run()  # warm-up: kernels, allocator
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        edit = run()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), edit


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m bench.scapre_scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--concepts", type=int, nargs="+", default=[50], help="concept counts to time (50)")
    parser.add_argument("--preserve", type=int, default=10, help="preserve concepts (10)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up; the median is shown")
    parser.add_argument("--sylvester", action="store_true", help="also time the Sylvester form (output_reg = 1)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads; 1 avoids OpenMP spinning when other jobs share the cores",
    )
    parser.add_argument("--report", default="", help="RESULTS.md whose ScaPre-scale section to replace")
    parser.add_argument("-v", "--verbose", action="store_true", help="library notices and info logs too")
    parser.add_argument("--tiny", action="store_true", help="SD 1.5's layout with narrow blocks (a smoke run)")
    args = parser.parse_args(argv)
    setup_output(args.verbose, own_loggers=("bench",))
    args.command = "python -m bench.scapre_scale " + " ".join(argv if argv is not None else sys.argv[1:])
    return run_command(_run, args)


def _run(args) -> int:
    if args.report:
        check_output_file(args.report, overwrite=True, what="--report")
    args.device = check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    unet = sd15_unet(args.device, tiny=args.tiny)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    targets = find_cross_attention_projections(unet)
    discovery_s = time.perf_counter() - started
    weights = targets.weights()
    # the defaults (the release's Imagenette pipeline) and every step on (its large-scale one)
    modes = {
        "uce": ScaPreSettings(mode="uce"),
        "scapre": ScaPreSettings(),
        "scapre all steps": ScaPreSettings(spectral=True, bures=True),
    }
    if args.sylvester:
        modes["scapre+sylvester"] = ScaPreSettings(output_reg=1.0)

    threads = torch.get_num_threads() if args.device == "cpu" else "-"
    lines: list[str] = []  # the report: printed, and written to RESULTS.md with --report
    out = lines.append
    out(
        f"UNet: SD 1.5 architecture (diffusers UNet2DConditionModel, {SD15_UNET['block_out_channels']}), RANDOM weights"
    )
    out(f"token rows: RANDOM embeddings shaped like CLIP-L's ({CLIP_WIDTH} wide, norm ~28), no text encoder")
    out(f"device {args.device}, torch {torch.__version__}, CPU threads {threads}")
    out(f"model build {build_s:.1f} s (not timed below), discovery {discovery_s * 1000:.1f} ms: {len(targets)} layers")
    out("")
    header = f"{'mode':<17} {'concepts':>8} {'rows':>5} {'layers':>6} {'seconds':>9} {'stored bytes':>13} {'dense bytes':>12} {'ratio':>6}"
    out(header)
    out("-" * len(header))
    for count in args.concepts:
        rows = random_token_rows(count, args.preserve)
        for mode, settings in modes.items():
            seconds, edit = time_edit(weights, rows, settings, args.repeats, args.device)
            out(
                f"{mode:<17} {count:>8} {len(rows['concepts']):>5} {len(edit.layers):>6} {seconds:>9.3f} "
                f"{edit.stored_bytes:>13,} {edit.dense_bytes:>12,} {edit.stored_bytes / edit.dense_bytes:>6.3f}"
            )
    out(f"\nseconds: median of {args.repeats} compute_edit runs after one warm-up (all layers, all ScaPre steps)")
    text = "\n".join(lines)
    sys.stdout.write(text + "\n")
    if args.report:
        write_section(
            Path(args.report),
            f"{REPORT_HEADING}\n\nCommand: `{args.command}` ({datetime.date.today().isoformat()})\n\n```\n{text}\n```\n",
        )
    return 0


if __name__ == "__main__":
    with exit_on_user_error():
        raise SystemExit(main())
