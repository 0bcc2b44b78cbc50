"""The README's main job: unlearn two digits at once on the bundled model, show before/after.

Prints a per-digit table (judge accuracy before and after) and writes a grid image: one row
per digit, the original model's samples on the left, the unlearned model's on the right,
each pair started from the same noise.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from PIL import Image

from fia_engine import fuse, localize_concepts
from fia_engine.diffusers_runner import collect_saliency

from .data import DIGIT_WORDS
from .sampling import generate, grid
from .unlearning import EVAL_PROMPT, DigitsBench, FiaSettings, masked_unet

logger = logging.getLogger(__name__)


def run_demo(forget: list[int], out: Path, images: int = 8, steps: int = 20, seed: int = 0) -> str:
    started = time.perf_counter()
    bench = DigitsBench(images_per_digit=images, seeds=(seed,), sample_steps=steps)
    settings = FiaSettings()
    saliency = collect_saliency(bench.engine, [DIGIT_WORDS[d] for d in forget], settings.collection("fast"))
    mask = fuse(localize_concepts(saliency, settings.r1, settings.r2), settings.alpha)
    unlearn_seconds = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    mask.save(out / "mask.safetensors")
    edited = masked_unet(bench.engine.unet, mask)
    prompts = [EVAL_PROMPT.format(word=word) for word in DIGIT_WORDS]
    before = generate(bench.sampling, prompts, images, seed, steps=steps)
    after = generate(bench.sampling, prompts, images, seed, steps=steps, unet_override=edited)
    judge = bench.judge
    hits_before = (torch.from_numpy(judge.predict(before)).view(10, images) == torch.arange(10)[:, None]).float()
    hits_after = (torch.from_numpy(judge.predict(after)).view(10, images) == torch.arange(10)[:, None]).float()
    _write_grid(before, after, images, out / "before_after.png")
    lines = [
        f"FIA demo: forget {', '.join(DIGIT_WORDS[d] for d in forget)} on the bundled digits model; "
        f"{mask.pruned_count} of {mask.total_count} FFN weights pruned ({100 * mask.pruned_fraction:.3f} %), "
        f"mask made in {unlearn_seconds:.1f} s",
        f"judge accuracy on {images} images per digit ('{EVAL_PROMPT}', seed {seed}, {steps} DDIM steps):",
        f"{'digit':<8}{'role':<9}{'before':>8}{'after':>8}",
    ]
    for digit, word in enumerate(DIGIT_WORDS):
        role = "forget" if digit in forget else "keep"
        lines.append(f"{word:<8}{role:<9}{hits_before[digit].mean():>8.2f}{hits_after[digit].mean():>8.2f}")
    kept = [d for d in range(10) if d not in forget]
    lines.append(f"{'forgotten digits':<17}{hits_before[forget].mean():>8.2f}{hits_after[forget].mean():>8.2f}")
    lines.append(f"{'kept digits':<17}{hits_before[kept].mean():>8.2f}{hits_after[kept].mean():>8.2f}")
    lines.append(
        f"wrote {out / 'before_after.png'} and {out / 'mask.safetensors'} in {time.perf_counter() - started:.0f} s"
    )
    return "\n".join(lines)


def _write_grid(before: torch.Tensor, after: torch.Tensor, images: int, path: Path) -> None:
    left, right = grid(before, columns=images), grid(after, columns=images)
    gap = 12
    sheet = Image.new("L", (left.width + gap + right.width, left.height), 255)
    sheet.paste(left, (0, 0))
    sheet.paste(right, (left.width + gap, 0))
    sheet.save(path)
