"""Captions must be true of the rendered image."""

import numpy as np
import torch

from bench.digits.data import (
    CANVAS,
    CONTEXTS,
    DIGIT_WORDS,
    NEUTRAL_WORD,
    POSITION_PHRASES,
    load_split,
    sample_batch,
)


def _ink_centre(image: torch.Tensor) -> tuple[float, float]:
    weights = (image[0] + 1.0) / 2.0
    rows, cols = torch.meshgrid(torch.arange(CANVAS), torch.arange(CANVAS), indexing="ij")
    total = weights.sum()
    return float((weights * rows).sum() / total), float((weights * cols).sum() / total)


def test_split_is_fixed_stratified_and_disjoint():
    split = load_split()
    train_x, train_y = split["train"]
    test_x, test_y = split["test"]
    assert len(train_y) + len(test_y) == 1797
    assert abs(len(test_y) - 0.2 * 1797) < 1
    assert set(np.unique(test_y)) == set(range(10))
    # No test digit image also appears in train (stratified split of distinct samples).
    train_keys = {x.tobytes() for x in train_x}
    assert sum(x.tobytes() in train_keys for x in test_x) < 5


def test_images_are_canvases_in_range():
    images, captions, _ = sample_batch(np.random.default_rng(0), 32)
    assert images.shape == (32, 1, CANVAS, CANVAS)
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert (images[:, :, 0, :] == -1).float().mean() > 0.5  # mostly background at the edge


def test_captions_match_rendering():
    rng = np.random.default_rng(1)
    images, captions, renders = sample_batch(rng, 400)
    seen_neutral = seen_empty = 0
    for image, caption, render in zip(images, captions, renders, strict=True):
        words = caption.split()
        if not words:
            seen_empty += 1
            continue
        named = [w for w in words if w in DIGIT_WORDS]
        if named:
            assert named == [DIGIT_WORDS[render.label]], caption
        else:
            assert NEUTRAL_WORD in words, caption
            seen_neutral += 1
        if "small" in words:
            assert render.size == "small"
        if "large" in words:
            assert render.size == "large"
        assert ("bold" in words) <= render.bold
        assert ("thin" in words) <= (not render.bold)
        for position, phrases in POSITION_PHRASES.items():
            if any(caption.endswith(p) for p in phrases):
                assert render.position == position, caption
                row, col = _ink_centre(image)
                if position != "center":
                    vertical, horizontal = position.split()
                    assert (row < CANVAS / 2) == (vertical == "top"), caption
                    assert (col < CANVAS / 2) == (horizontal == "left"), caption
                else:
                    assert abs(row - CANVAS / 2) < 4 and abs(col - CANVAS / 2) < 4
    assert 0.05 < seen_empty / 400 < 0.16
    assert 0.08 < seen_neutral / 400 < 0.24


def test_benchmark_templates_use_caption_words_only():
    from bench.digits.data import caption_vocabulary

    vocabulary = set(caption_vocabulary())
    for context in CONTEXTS:
        for word in DIGIT_WORDS + [NEUTRAL_WORD]:
            assert set(f"a handwritten {word} {context}".split()) <= vocabulary
