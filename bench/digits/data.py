"""Real handwritten digits drawn on a 32x32 canvas, with captions that describe the drawing.

The digits are scikit-learn's ``load_digits`` (1797 real 8x8 scans, values 0..16). One fixed,
seeded, stratified split is shared by training and the judge, so test digits are never
trained on. Each sample is rendered on the fly: upsampled to a size, optionally made bold,
placed at a position; its caption names only what is true of the rendered image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

logger = logging.getLogger(__name__)

CANVAS = 32
SPLIT_SEED = 0
TEST_FRACTION = 0.2

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
NEUTRAL_WORD = "digit"

POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
# Every wording of a position that captions use; the benchmark's {context} phrases.
POSITION_PHRASES = {
    "top left": ("in the top left corner", "near the top left corner"),
    "top right": ("in the top right corner", "near the top right corner"),
    "bottom left": ("in the bottom left corner", "near the bottom left corner"),
    "bottom right": ("in the bottom right corner", "near the bottom right corner"),
    "center": ("in the center", "in the middle"),
}
CONTEXTS = [phrase for pos in POSITIONS for phrase in POSITION_PHRASES[pos]]

# Glyph side in pixels (before the empty border of the 8x8 scan is counted), sampled per image.
SIZES = {"small": (11, 13), "medium": (15, 17), "large": (19, 21)}
SIZE_WORDS = ("small", "large")  # medium is never named
STROKE_WORDS = ("bold", "thin")

# Caption mix: ~10 % empty (classifier-free guidance), ~15 % neutral ("digit" replaces the name).
P_EMPTY = 0.10
P_NEUTRAL = 0.15
P_SIZE_WORD = 0.5
P_BOLD_WORD = 0.7
P_THIN_WORD = 0.2
P_POSITION = 0.7
P_BOLD = 0.3

# Extra words the tokenizer knows so that common prompt variants are not [UNK].
EXTRA_WORDS = ("an", "of", "number", "image", "picture", "drawing", "handwriting")


@dataclass(frozen=True)
class Render:
    """What a rendered image shows; its caption may mention any subset of it."""

    label: int
    size: str
    side: int
    bold: bool
    position: str
    row: int
    col: int


@lru_cache(maxsize=1)
def load_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The fixed 80/20 stratified split: {"train": (images01, labels), "test": ...}."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    return {
        "train": (images[idx_train], labels[idx_train]),
        "test": (images[idx_test], labels[idx_test]),
    }


def _offset(position: str, side: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a side x side glyph box for a named position, with 0-1 px jitter."""
    margin = 1 + int(rng.integers(0, 2))
    far = CANVAS - side - margin
    if position == "center":
        mid = (CANVAS - side) // 2
        return mid + int(rng.integers(-1, 2)), mid + int(rng.integers(-1, 2))
    vertical, horizontal = position.split()
    row = margin if vertical == "top" else far
    col = margin if horizontal == "left" else far
    return row, col


def draw(image01: np.ndarray, side: int, bold: bool, row: int, col: int) -> torch.Tensor:
    """One 8x8 digit in [0, 1] drawn on a (1, 32, 32) canvas in [-1, 1], background -1."""
    glyph = torch.from_numpy(image01)[None, None]
    glyph = F.interpolate(glyph, size=(side, side), mode="bilinear", align_corners=False)
    if bold:
        # Dilation thickens strokes the way a broader pen would.
        glyph = F.max_pool2d(glyph, kernel_size=3, stride=1, padding=1)
    canvas = torch.zeros(1, CANVAS, CANVAS)
    canvas[:, row : row + side, col : col + side] = glyph[0].clamp(0.0, 1.0)
    return canvas * 2.0 - 1.0


def random_render(label: int, rng: np.random.Generator) -> Render:
    """Draw the rendering attributes of one sample."""
    size = list(SIZES)[int(rng.integers(len(SIZES)))]
    lo, hi = SIZES[size]
    side = int(rng.integers(lo, hi + 1))
    position = POSITIONS[int(rng.integers(len(POSITIONS)))]
    row, col = _offset(position, side, rng)
    bold = bool(rng.random() < P_BOLD)
    return Render(label, size, side, bold, position, row, col)


def _article(next_word: str, rng: np.random.Generator) -> str:
    if rng.random() < 0.25:
        return "the"
    return "an" if next_word[0] in "aeiou" else "a"


def attribute_words(render: Render, rng: np.random.Generator) -> list[str]:
    """Some of the words that are true of how ``render`` was drawn (size, stroke weight)."""
    words = []
    if render.size in SIZE_WORDS and rng.random() < P_SIZE_WORD:
        words.append(render.size)
    if render.bold and rng.random() < P_BOLD_WORD:
        words.append("bold")
    elif not render.bold and rng.random() < P_THIN_WORD:
        words.append("thin")
    return words


def caption_for(render: Render, rng: np.random.Generator) -> str:
    """A caption that is true of ``render``: names the digit (or "digit") and some context."""
    roll = rng.random()
    if roll < P_EMPTY:
        return ""
    neutral = roll < P_EMPTY + P_NEUTRAL
    adjectives = attribute_words(render, rng)
    name = NEUTRAL_WORD if neutral else DIGIT_WORDS[render.label]
    form = rng.random()
    if form < 0.55:
        # The benchmark's template: "a handwritten {digit word or 'digit'} {context}".
        head = adjectives + ["handwritten", name]
    elif form < 0.8 or neutral:
        head = adjectives + [name]
    else:
        head = adjectives + [NEUTRAL_WORD, name]
    words = [_article(head[0], rng)] + head
    if rng.random() < P_POSITION:
        phrases = POSITION_PHRASES[render.position]
        words.append(phrases[int(rng.integers(len(phrases)))])
    return " ".join(words)


def caption_vocabulary() -> list[str]:
    """Every word a caption can contain (sorted, deterministic)."""
    words = set(DIGIT_WORDS) | {NEUTRAL_WORD, "handwritten", "a", "the"}
    words |= set(SIZE_WORDS) | set(STROKE_WORDS) | set(EXTRA_WORDS)
    for phrase in CONTEXTS:
        words |= set(phrase.split())
    return sorted(words)


def sample_batch(
    rng: np.random.Generator, batch_size: int, split: str = "train"
) -> tuple[torch.Tensor, list[str], list[Render]]:
    """A batch of freshly rendered digits of ``split``: images (B, 1, 32, 32), captions, renders."""
    images01, labels = load_split()[split]
    picks = rng.integers(0, len(labels), size=batch_size)
    canvases, captions, renders = [], [], []
    for i in picks:
        render = random_render(int(labels[i]), rng)
        canvases.append(draw(images01[i], render.side, render.bold, render.row, render.col))
        captions.append(caption_for(render, rng))
        renders.append(render)
    return torch.stack(canvases), captions, renders
