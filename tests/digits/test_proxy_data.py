"""The proxy model's data: every glyph concept drawable, captions true of the drawing, no unknown words."""

import numpy as np

from bench.digits.data import CANVAS, DIGIT_WORDS, POSITION_PHRASES
from bench.digits.glyphs import SCAN_SIDE, glyph_concepts, glyph_scans
from bench.digits.proxy_data import glyph_caption, proxy_vocabulary, sample_proxy_batch
from bench.digits.tokenizer import build_tokenizer, encode


def test_every_glyph_concept_has_scans_and_no_name_is_a_digit_word():
    scans, labels = glyph_scans()
    concepts = glyph_concepts()
    assert scans.shape[1:] == (SCAN_SIDE, SCAN_SIDE) and 0.0 <= scans.min() and scans.max() <= 1.0
    assert set(labels.tolist()) == set(range(len(concepts)))
    assert len(concepts) >= 80  # many more concepts than the ten digits
    names = [c.name for c in concepts]
    assert len(set(names)) == len(names) and not set(names) & set(DIGIT_WORDS)
    # glyphs are not blank and differ between concepts
    assert (scans.reshape(len(scans), -1).max(axis=1) > 0.5).all()
    first = {int(k): scans[np.flatnonzero(labels == k)[0]] for k in range(len(concepts))}
    assert np.abs(first[0] - first[len(concepts) - 1]).mean() > 0.05


def test_batches_mix_digits_and_glyphs_with_known_words_only():
    rng = np.random.default_rng(0)
    images, captions, ids = sample_proxy_batch(rng, 400, digit_share=0.5)
    assert images.shape == (400, 1, CANVAS, CANVAS) and images.min() >= -1 and images.max() <= 1
    digits = sum(i < 10 for i in ids)
    assert 150 < digits < 250  # about half are digits
    assert len(set(ids)) > 60  # the glyph half spreads over many concepts
    tokenizer = build_tokenizer(proxy_vocabulary())
    assert (encode(tokenizer, captions) != tokenizer.unk_token_id).all()


def test_glyph_captions_name_the_glyph_and_only_true_context():
    rng = np.random.default_rng(3)
    concepts = glyph_concepts()
    _, captions, ids = sample_proxy_batch(rng, 600, digit_share=0.0)
    named = 0
    for caption, concept_id in zip(captions, ids, strict=True):
        concept = concepts[concept_id - 10]
        words = caption.split()
        others = {c.name for c in concepts} - {concept.name}
        assert not others & set(words), caption  # never names another concept
        named += concept.name in words
    assert named > 0.6 * len(captions)  # the rest: empty or the neutral word


def test_position_words_are_true():
    from bench.digits.data import random_render

    rng = np.random.default_rng(5)
    concept = glyph_concepts()[0]
    for _ in range(200):
        render = random_render(10, rng)
        caption = glyph_caption(concept, render, rng)
        for position, phrases in POSITION_PHRASES.items():
            if any(p in caption for p in phrases):
                assert position == render.position, caption
