"""Draw a mask's per-layer pruned fraction as a bar chart image (PIL only)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH, ROW, TOP, LEFT = 720, 18, 64, 110


def mask_chart(summary: dict) -> np.ndarray:
    """An RGB float image in [0, 1] (H, W, 3): one bar per layer, a title with the totals."""
    layers = summary["layers"]
    height = TOP + ROW * len(layers) + 16
    image = Image.new("RGB", (WIDTH, height), (24, 24, 28))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    concepts = ", ".join(summary["concepts"])
    if len(concepts) > 90:
        concepts = concepts[:87] + "..."
    draw.text((10, 8), f"FIA mask: {concepts}", fill=(235, 235, 235), font=font)
    draw.text(
        (10, 26),
        f"{summary['family']}  pruned {summary['pruned']} of {summary['total']} weights "
        f"({summary['pruned_percent']:.4f} %)  agnostic kept {summary['agnostic_kept']}",
        fill=(190, 190, 190),
        font=font,
    )
    draw.text((10, 44), "pruned % per layer", fill=(150, 150, 150), font=font)
    peak = max([percent for _, percent in layers] + [1e-9])
    for row, (name, percent) in enumerate(layers):
        y = TOP + row * ROW
        draw.text((10, y + 2), name, fill=(200, 200, 200), font=font)
        length = int((WIDTH - LEFT - 80) * percent / peak)
        draw.rectangle([LEFT, y + 3, LEFT + max(1, length), y + ROW - 3], fill=(226, 110, 64))
        draw.text((LEFT + length + 6, y + 2), f"{percent:.3f}", fill=(200, 200, 200), font=font)
    return np.asarray(image, dtype=np.float32) / 255.0
