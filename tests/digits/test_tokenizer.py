"""The saved word-level tokenizer loads with AutoTokenizer and pads like SD pipelines."""

from transformers import AutoTokenizer

from bench.digits.tokenizer import MAX_LENGTH, build_tokenizer, save_tokenizer


def test_round_trip_and_unknown_words(tmp_path):
    save_tokenizer(build_tokenizer(), tmp_path)
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    assert tok.model_max_length == MAX_LENGTH
    batch = tok(
        ["a handwritten seven", "A Zebra"],
        padding="max_length",
        max_length=tok.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    ids = batch.input_ids
    assert ids.shape == (2, MAX_LENGTH)
    assert ids[0, 0] == tok.bos_token_id and ids[0, 4] == tok.eos_token_id
    assert (ids[0, 5:] == tok.pad_token_id).all()
    assert tok.decode(ids[0], skip_special_tokens=True) == "a handwritten seven"
    assert ids[1, 2] == tok.unk_token_id  # "zebra" is not in the caption grammar
    assert tok.decode(ids[1, 1:2]) == "a"  # lower-cased


def test_long_prompts_are_truncated():
    tok = build_tokenizer()
    ids = tok(["a " * 40], padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids
    assert len(ids[0]) == MAX_LENGTH
