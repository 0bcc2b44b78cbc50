"""What the Neuron Localizer, Agnostic Fusion and Apply Mask cost, first run and re-tune.

    python -m bench.localize                                # SD 1.5's layers, 10 concepts, 10 steps
    python -m bench.localize --arch small --concepts 2 --saliency-steps 2 --resolution 32

Weights are random (an SD 1.5-shaped UNet, as bench.speed builds it): the cost depends on the
layer shapes, the number of concepts and steps, not on the values. The collection itself runs
at a tiny resolution and one prompt pair (it is not what is measured; bench.speed measures
it). Then, on the same saliency, in the order a ComfyUI user meets them:

  localise (first)      r1 0.05, r2 0.01: everything is computed (and cached on the saliency)
  re-tune r2            r2 0.007, then 0.012: the cached top lists are read
  re-tune r2 beyond     r2 0.02: longer lists are built (r2 > 1.5 x the first one)
  fuse                  alpha 0.6, then 0.8
  apply                 a pruned copy of every target weight (what sampling with the mask needs)

Times are wall-clock seconds of one run each, and the CPU seconds of this process (on a
machine shared with other jobs, what the step itself costs); the cache's size is reported too.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import time

import torch

from bench.speed import ARCHS, build_components
from fia_engine import find_target_layers, fuse, localize_concepts
from fia_engine.diffusers_runner import CollectionSettings, collect_saliency
from fia_engine.prompts import PLACES, build_prompt_plan

logger = logging.getLogger("bench.localize")


def timed(fn):
    """(wall seconds, CPU seconds of this process, result): on a shared machine the CPU time
    says what the step costs without the other jobs' share of the cores."""
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - start, time.process_time() - cpu, result


def cache_bytes(saliency) -> int:
    """Bytes held by the localisation cache of a saliency (tensors only)."""
    total = 0
    for value in saliency.cache.values():
        items = value if isinstance(value, list) else [value]
        for item in items:
            for tensor in vars(item).values() if item is not None else ():
                if torch.is_tensor(tensor):
                    total += tensor.numel() * tensor.element_size()
    return total


def run(args) -> list[tuple[str, float]]:
    components = build_components(args.arch, args.device, torch.float32)
    concepts = [f"{PLACES[i]} thing" for i in range(args.concepts)]
    settings = CollectionSettings(
        pairs=args.pairs, steps=50, saliency_steps=args.saliency_steps, resolution=args.resolution, mode="fast"
    )
    plan = build_prompt_plan(concepts, "custom", settings.pairs, "a {concept} near a {context}", "a {context}")
    rows = [
        (
            "collection (not the subject; tiny resolution)",
            timed(lambda: collect_saliency(components, concepts, settings, plan=plan)),
        )
    ]
    saliency = rows[0][1][2]
    rows.append(("localise, first run (r2 0.01)", timed(lambda: localize_concepts(saliency, 0.05, 0.01))))
    rows.append(("re-tune: localise r2 0.007", timed(lambda: localize_concepts(saliency, 0.05, 0.007))))
    if args.quick:
        return [(name, seconds, cpu) for name, (seconds, cpu, _) in rows], cache_bytes(saliency)
    retuned = timed(lambda: localize_concepts(saliency, 0.05, 0.012))
    rows.append(("re-tune: localise r2 0.012", retuned))
    masks = retuned[2]
    rows.append(("fuse alpha 0.6", timed(lambda: fuse(masks, 0.6))))
    fused = timed(lambda: fuse(masks, 0.8))
    rows.append(("fuse alpha 0.8", fused))
    layers = find_target_layers(components.unet)
    rows.append(
        (
            "apply: pruned copy of every target weight",
            timed(lambda: [fused[2].masked_weight(layer.canonical, layer.module.weight) for layer in layers]),
        )
    )
    rows.append(
        ("re-tune beyond the cached lists: localise r2 0.02", timed(lambda: localize_concepts(saliency, 0.05, 0.02)))
    )
    logger.info("cache on the saliency: %.1f MiB", cache_bytes(saliency) / 2**20)
    return [(name, seconds, cpu) for name, (seconds, cpu, _) in rows], cache_bytes(saliency)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=sorted(ARCHS), default="sd15")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--concepts", type=int, default=10)
    parser.add_argument("--saliency-steps", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=64, help="pixels of the (unmeasured) collection")
    parser.add_argument("--quick", action="store_true", help="stop after the first re-tune")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    rows, held = run(args)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()}"
    print(
        f"### bench.localize --arch {args.arch}: {args.concepts} concepts, {args.saliency_steps} saliency steps, "
        f"fast mode, on {device}, torch {torch.__version__}, {datetime.date.today()}\n"
    )
    print("| step | seconds | CPU seconds |\n|---|---|---|")
    for name, seconds, cpu in rows:
        print(f"| {name} | {seconds:.3f} | {cpu:.3f} |")
    print(f"\ncache held on the saliency: {held / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
