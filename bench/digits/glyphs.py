"""Printed glyph concepts for the proxy model: letters, Greek letters and symbols.

The proxy model must know many concepts besides the ten digits, as Stable Diffusion knows
thousands besides any one it is asked to forget (bench/digits/README.md says why). These
concepts come from real typefaces that ship with matplotlib (DejaVu, STIX, Computer Modern):
each glyph is rendered once per font that has it and then drawn on the canvas exactly like a
digit scan (same sizes, strokes and positions, see ``data.draw``).

Letters that a digit judge could mistake for a digit (O, I, S, Z, B, G) are left out, so that
a model asked for a forgotten digit that draws a letter instead is not counted as drawing it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SCAN_SIDE = 12  # glyph "scans": rendered at this size (about as coarse as the 8x8 digit scans), then drawn like them
RENDER_SIZE = 96  # font size in pixels before cropping to the ink

LETTERS = tuple("cdefhjkmnpqrtuvwxy")  # no o, i, s, z, b, g (digit look-alikes), l (too thin), a (the article)
GREEK = {
    "omega": "\u03a9",
    "sigma": "\u03a3",
    "pi": "\u03c0",
    "lambda": "\u03bb",
    "delta": "\u0394",
    "psi": "\u03a8",
    "phi": "\u03a6",
    "theta": "\u03b8",
}
SYMBOLS = {
    "heart": "\u2665",
    "spade": "\u2660",
    "club": "\u2663",
    "diamond": "\u2666",
    "star": "\u2605",
    "sun": "\u2600",
    "cloud": "\u2601",
    "umbrella": "\u2602",
    "snowman": "\u2603",
    "telephone": "\u260e",
    "note": "\u266a",
    "smiley": "\u263a",
    "anchor": "\u2693",
    "airplane": "\u2708",
    "scissors": "\u2702",
    "envelope": "\u2709",
    "pencil": "\u270f",
    "flag": "\u2691",
    "king": "\u265a",
    "queen": "\u265b",
    "rook": "\u265c",
    "bishop": "\u265d",
    "knight": "\u265e",
    "pawn": "\u265f",
    "yinyang": "\u262f",
    "peace": "\u262e",
    "radiation": "\u2622",
    "lightning": "\u26a1",
    "flower": "\u273f",
    "snowflake": "\u2744",
    "moon": "\u263d",
    "house": "\u2302",
    "gear": "\u2699",
    "skull": "\u2620",
    "warning": "\u26a0",
    "scales": "\u2696",
    "wheel": "\u2638",
    "cross": "\u271a",
    "arrow": "\u2794",
    "check": "\u2714",
    "hand": "\u261b",
    "crown": "\u2654",
    "recycle": "\u267b",
    "atom": "\u269b",
    "female": "\u2640",
    "male": "\u2642",
    "infinity": "\u221e",
    "clover": "\u2618",
    "cup": "\u2615",
    "triangle": "\u25b2",
    "square": "\u25a0",
    "circle": "\u25cf",
    "dollar": "$",
    "euro": "\u20ac",
    "pound": "\u00a3",
    "yen": "\u00a5",
    "at": "@",
    "ampersand": "&",
    "percent": "%",
    "hash": "#",
    "section": "\u00a7",
    "paragraph": "\u00b6",
    "trident": "\u2646",
    "biohazard": "\u2623",
    "ankh": "\u2625",
}
# Fonts whose glyphs are drawn; LastResort (placeholder boxes) and the STIX size variants
# (bracket pieces) are left out.
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmb10.ttf",
    "cmti10.ttf",
)
KINDS = ("letter", "greek", "symbol")
NEUTRAL_WORDS = {"letter": "letter", "greek": "letter", "symbol": "symbol"}


@dataclass(frozen=True)
class GlyphConcept:
    name: str  # the caption word
    char: str
    kind: str  # "letter", "greek" or "symbol"


def glyph_concepts() -> tuple[GlyphConcept, ...]:
    """Every glyph concept, in a fixed order: letters, Greek letters, symbols."""
    letters = tuple(GlyphConcept(c, c.upper(), "letter") for c in LETTERS)
    greek = tuple(GlyphConcept(name, char, "greek") for name, char in GREEK.items())
    symbols = tuple(GlyphConcept(name, char, "symbol") for name, char in SYMBOLS.items())
    return letters + greek + symbols


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@lru_cache(maxsize=None)
def _font_chars(path: Path) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    return frozenset(TTFont(str(path), lazy=True).getBestCmap() or {})


def _render(path: Path, char: str) -> np.ndarray | None:
    """One glyph cut to its ink, centred in a square, as a SCAN_SIDE^2 array in [0, 1]."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(path), RENDER_SIZE)
    canvas = Image.new("L", (2 * RENDER_SIZE, 2 * RENDER_SIZE), 0)
    ImageDraw.Draw(canvas).text((RENDER_SIZE // 2, RENDER_SIZE // 4), char, fill=255, font=font)
    box = canvas.getbbox()
    if box is None:
        return None
    ink = canvas.crop(box)
    side = max(ink.size)
    square = Image.new("L", (side, side), 0)
    square.paste(ink, ((side - ink.size[0]) // 2, (side - ink.size[1]) // 2))
    scan = square.resize((SCAN_SIDE, SCAN_SIDE), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(scan, dtype=np.float32) / 255.0, 0.0, 1.0)


@lru_cache(maxsize=1)
def glyph_scans() -> tuple[np.ndarray, np.ndarray]:
    """(scans (N, SCAN_SIDE, SCAN_SIDE) in [0, 1], concept index (N,)): every concept in every font that has it."""
    scans, labels = [], []
    folder = font_dir()
    for index, concept in enumerate(glyph_concepts()):
        for name in FONT_FILES:
            path = folder / name
            if not path.exists() or ord(concept.char) not in _font_chars(path):
                continue
            scan = _render(path, concept.char)
            if scan is not None:
                scans.append(scan)
                labels.append(index)
    missing = sorted(set(range(len(glyph_concepts()))) - set(labels))
    if missing:
        raise RuntimeError(f"no font draws glyph concepts {missing}; is matplotlib's font folder complete?")
    logger.info("rendered %d glyph scans of %d concepts", len(scans), len(glyph_concepts()))
    return np.stack(scans), np.asarray(labels, dtype=np.int64)
