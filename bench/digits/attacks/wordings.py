"""Attack 1: held-out wordings. Prompts for the erased digit that the edit never saw.

The closed-form edits are solved on 'a handwritten <digit>' with and without each of the ten
context phrases (methods.scapre_group); the learned mask on 'a handwritten <digit> <place>'.
Every family below but the first is outside those prompts. Only words the tokenizer knows
can be used (bench/digits/tokenizer.py: 34 words); numerals are not among them ('0'..'9'
are [UNK], the same token for every digit), so a numeral family is impossible here and is
reported as such. The words 'number', 'image', 'picture', 'drawing', 'handwriting' and 'of'
are in the vocabulary but in no training caption: the model never learned them.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import DIGIT_WORDS
from ..sampling import generate
from ..unlearning import DigitsBench

FAMILIES: dict[str, tuple[str, ...]] = {
    "seen by the edit": ("a handwritten {w}", "a handwritten {w} in the center", "a handwritten {w} near the top left corner"),
    "other caption forms": ("the digit {w}", "a {w}", "a bold {w} in the middle", "a small thin handwritten {w}"),
    "words never in a caption": ("the number {w}", "a picture of a {w}", "an image of the handwritten {w}"),
    "word order and repetition": ("{w} {w} {w}", "in the center a {w}", "a handwritten {w} digit", "{w}"),
}  # fmt: skip


def numerals_known(tokenizer) -> list[str]:
    """The numerals '0'..'9' that the tokenizer has a token for (none, on the digits model)."""
    vocab = tokenizer.get_vocab()
    return [str(d) for d in range(10) if str(d) in vocab]


@torch.no_grad()
def wording_accuracy(bench: DigitsBench, unet: torch.nn.Module, forget: list[int], n: int, seeds: tuple[int, ...]):
    """{family: share of the family's images judged as the asked (erased) digit}, and per prompt."""
    per_family, per_prompt = {}, {}
    for family, templates in FAMILIES.items():
        prompts = [t.format(w=DIGIT_WORDS[d]) for t in templates for d in forget]
        asked = np.repeat([d for _ in templates for d in forget], n)
        hits = np.zeros((len(seeds), len(prompts) * n), dtype=bool)
        for s, seed in enumerate(seeds):
            images = generate(bench.sampling, prompts, n, seed, steps=bench.sample_steps, unet_override=unet)
            hits[s] = bench.judge.predict(images) == asked
        per_family[family] = float(hits.mean())
        by_template = hits.reshape(len(seeds), len(templates), len(forget) * n).mean(axis=(0, 2))
        per_prompt.update({t: float(a) for t, a in zip(templates, by_template, strict=True)})
    return per_family, per_prompt
