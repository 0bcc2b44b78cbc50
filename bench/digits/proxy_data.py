"""Training batches of the proxy model: the handwritten digits and the printed glyph concepts.

Digits are drawn and captioned exactly as for the digits model (``data.py``), so every
benchmark prompt means the same on both models. Glyph concepts (``glyphs.py``) use the same
canvas, sizes, strokes and positions, with captions of the same shape:
``[a|the] [small|large] [bold|thin] [letter|greek] <name> [symbol] [<context>]``, a neutral
word (``letter`` / ``symbol``) in place of the name in some, none at all in others.
"""

from __future__ import annotations

import numpy as np
import torch

from .data import (
    CONTEXTS,
    EXTRA_WORDS,
    P_EMPTY,
    P_NEUTRAL,
    P_POSITION,
    POSITION_PHRASES,
    SIZE_WORDS,
    STROKE_WORDS,
    Render,
    attribute_words,
    caption_for,
    caption_vocabulary,
    draw,
    load_split,
    random_render,
)
from .glyphs import NEUTRAL_WORDS, GlyphConcept, glyph_concepts, glyph_scans

GLYPH_WORDS = ("letter", "symbol", "greek", "printed")


def _article(next_word: str, rng: np.random.Generator) -> str:
    if rng.random() < 0.25:
        return "the"
    return "an" if next_word[0] in "aeiou" else "a"


def glyph_caption(concept: GlyphConcept, render: Render, rng: np.random.Generator) -> str:
    """A caption that is true of a drawn glyph, of the same shape as the digit captions."""
    roll = rng.random()
    if roll < P_EMPTY:
        return ""
    neutral = roll < P_EMPTY + P_NEUTRAL
    words = attribute_words(render, rng)
    if rng.random() < 0.3:
        words.append("printed")
    if neutral:
        words.append(NEUTRAL_WORDS[concept.kind])
    elif concept.kind == "symbol":
        words += [concept.name] + (["symbol"] if rng.random() < 0.3 else [])
    else:
        # "letter q" / "greek sigma" most of the time, the bare name otherwise.
        if rng.random() < 0.7:
            words.append("letter" if concept.kind == "letter" else "greek")
        words.append(concept.name)
    words = [_article(words[0], rng)] + words
    if rng.random() < P_POSITION:
        phrases = POSITION_PHRASES[render.position]
        words.append(phrases[int(rng.integers(len(phrases)))])
    return " ".join(words)


def proxy_vocabulary() -> list[str]:
    """Every word a digit or glyph caption can contain (sorted)."""
    words = set(caption_vocabulary()) | set(GLYPH_WORDS) | {c.name for c in glyph_concepts()}
    words |= set(SIZE_WORDS) | set(STROKE_WORDS) | set(EXTRA_WORDS)
    for phrase in CONTEXTS:
        words |= set(phrase.split())
    return sorted(words)


def sample_proxy_batch(
    rng: np.random.Generator, batch_size: int, digit_share: float, split: str = "train"
) -> tuple[torch.Tensor, list[str], list[int]]:
    """Images (B, 1, 32, 32), captions and concept ids (digits 0..9, glyph k at 10 + k)."""
    digit_images, digit_labels = load_split()[split]
    scans, scan_labels = glyph_scans()
    concepts = glyph_concepts()
    canvases, captions, ids = [], [], []
    for _ in range(batch_size):
        if rng.random() < digit_share:
            i = int(rng.integers(len(digit_labels)))
            render = random_render(int(digit_labels[i]), rng)
            canvases.append(draw(digit_images[i], render.side, render.bold, render.row, render.col))
            captions.append(caption_for(render, rng))
            ids.append(int(digit_labels[i]))
            continue
        concept = int(rng.integers(len(concepts)))
        scan = scans[int(rng.choice(np.flatnonzero(scan_labels == concept)))]
        render = random_render(10 + concept, rng)
        canvases.append(draw(scan, render.side, render.bold, render.row, render.col))
        captions.append(glyph_caption(concepts[concept], render, rng))
        ids.append(10 + concept)
    return torch.stack(canvases), captions, ids
