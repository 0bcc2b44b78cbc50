"""The demo's before/after picture names its panels and its rows."""

import numpy as np
import torch
from PIL import Image

from bench.digits.demo import FIA, SCAPRE, UCE, _write_grid


def test_panels_are_titled_and_rows_labelled(tmp_path):
    images = 3
    panels = {name: torch.rand(10 * images, 1, 32, 32) * 2 - 1 for name in ("before", FIA, SCAPRE, UCE)}
    path = tmp_path / "demo" / "before_after.png"
    _write_grid(panels, [0, 8], path)
    picture = np.asarray(Image.open(path).convert("L"))
    sheet_width = images * (32 * 4 + 4)  # sampling.grid: 4x enlarged cells with a 4-pixel gap
    sheet_height = 10 * (32 * 4 + 4)
    top = picture.shape[0] - sheet_height
    left = picture.shape[1] - 4 * sheet_width - 3 * 12
    assert top > 20 and left > 60  # room for the titles above and the digit names beside
    title_band, label_band = picture[:top], picture[top:, :left]
    for k in range(4):  # ink above every panel: its title
        x0 = left + k * (sheet_width + 12)
        assert (title_band[:, x0 : x0 + sheet_width] < 128).any()
    row = sheet_height // 10
    for digit in range(10):  # ink beside every row: its digit
        assert (label_band[digit * row : (digit + 1) * row] < 128).any()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["before_after.png", "demo"]
