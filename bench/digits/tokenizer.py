"""A word-level tokenizer for the caption grammar, loadable with ``AutoTokenizer``."""

from __future__ import annotations

import logging
from pathlib import Path

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from .data import caption_vocabulary

logger = logging.getLogger(__name__)

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
MAX_LENGTH = 16  # longest caption is 12 tokens with BOS/EOS


def build_tokenizer(words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Special tokens first (ids 0..3), then the caption words (default: the digit captions') in sorted order."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in sorted(words) if words is not None else caption_vocabulary():
        vocab[word] = len(vocab)
    core = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=MAX_LENGTH,
        padding_side="right",
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: Path) -> None:
    tokenizer.save_pretrained(str(directory))
    logger.info("tokenizer (%d tokens) saved to %s", len(tokenizer), directory)


def load_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(str(directory))


def encode(tokenizer: PreTrainedTokenizerFast, prompts: list[str]):
    """Token ids (B, max_length), padded the way Stable Diffusion pipelines pad."""
    return tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
