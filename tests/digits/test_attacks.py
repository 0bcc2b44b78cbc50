"""The attack bench (issue 15), reduced: the attacks run, and each one works on the ORIGINAL model.

An attack that cannot make the unedited model draw the digit would report every edit as
robust; these controls keep a broken attack from passing as robustness.
"""

import numpy as np
import pytest
import torch

from bench.digits import MODEL_DIR
from bench.digits.__main__ import main
from bench.digits.attacks import HEADING
from bench.digits.attacks.embedding import EmbeddingSettings, attack_digit, placeholder
from bench.digits.attacks.refill import (
    as_missing,
    candidate_sets,
    complete_low_rank,
    fill_row_statistics,
    hard_impute,
    refill,
)
from bench.digits.attacks.report import plot, section
from bench.digits.attacks.retrain import RetrainSettings, retrain
from bench.digits.attacks.run import AttackSettings, load_result, run_attacks, save_result
from bench.digits.attacks.targets import LEARNED, LEARNED_DECOYS, ORIGINAL, decoy_unet
from bench.digits.attacks.wordings import FAMILIES, numerals_known, wording_accuracy
from bench.digits.benchmark import P1_FORGET
from bench.digits.gate import as_mask
from bench.digits.unlearning import DigitsBench, masked_unet
from fia_engine import find_target_layers


@pytest.fixture(scope="module")
def bench():
    return DigitsBench(MODEL_DIR, images_per_digit=2, seeds=(0,))


@pytest.fixture(scope="module")
def random_mask(bench):
    """5 % of every FFN2 layer, at random: a stand-in for the learned mask (not shipped)."""
    generator = torch.Generator().manual_seed(0)
    pruned = {}
    for layer in find_target_layers(bench.sampling.unet):
        count = layer.module.weight.numel()
        pruned[layer.canonical] = torch.randperm(count, generator=generator)[: count // 20].sort().values
    return as_mask(bench.sampling.unet, pruned, "random 5 % (test)")


def test_held_out_wordings_name_the_digit_on_the_original(bench):
    assert numerals_known(bench.sampling.tokenizer) == []  # '0'..'9' are [UNK] on this model
    family, prompts = wording_accuracy(bench, bench.sampling.unet, [0, 3], n=2, seeds=(0,))
    assert set(family) == set(FAMILIES) and len(prompts) == sum(map(len, FAMILIES.values()))
    # chance is 0.1; measured 0.91 (seed 0, 2 images per prompt and digit, 1 thread)
    assert np.mean(list(family.values())) >= 0.5, family


def test_the_embedding_attack_revives_the_digit_on_the_original(bench):
    settings = EmbeddingSettings(budgets=(0, 25), batch=16)
    success = attack_digit(bench, bench.sampling.unet, 3, settings, n=8, seeds=(0,))
    # it starts at the neutral word 'digit' (rarely a three) and must reach the digit: measured 0.0 -> 1.0
    assert success[25] >= 0.6 and success[25] >= success[0] + 0.4, success
    # the hook is gone afterwards and the model's parameters still train as they did
    assert not bench.sampling.text_encoder.get_input_embeddings()._forward_hooks
    assert all(p.requires_grad for p in bench.sampling.unet.parameters())


def test_placeholder_replaces_only_the_unknown_token(bench):
    text_encoder, tokenizer = bench.sampling.text_encoder, bench.sampling.tokenizer
    ids = tokenizer(["a handwritten x"], return_tensors="pt").input_ids
    embedding = text_encoder.get_input_embeddings()
    vector = torch.full((embedding.embedding_dim,), 0.5)
    with placeholder(text_encoder, tokenizer.get_vocab()["[UNK]"], vector):
        rows = embedding(ids)[0]
    assert torch.equal(rows[3], vector) and torch.equal(rows[:3], embedding(ids)[0][:3])


def test_completion_and_row_statistics_by_hand():
    generator = torch.Generator().manual_seed(0)
    low_rank = torch.randn(12, 2, generator=generator) @ torch.randn(2, 16, generator=generator)
    missing = torch.rand(12, 16, generator=generator) < 0.1
    filled, rank = complete_low_rank(low_rank, missing, generator)
    assert rank == 2 and (filled - low_rank).abs().max() < 1e-3  # a rank-2 layer is completed exactly
    assert torch.equal(filled[~missing], low_rank[~missing])
    assert (hard_impute(low_rank, missing, 1) - low_rank)[missing].abs().max() > 0.01  # too low a rank cannot
    weight = torch.tensor([[1.0, -2.0, 3.0, 0.0], [-1.0, -3.0, 2.0, 0.0]])
    holes = torch.tensor([[False, False, False, True], [False, False, False, True]])
    # row 0: mean |w| 2, mean +2/3 -> +2; row 1: mean |w| 2, mean -2/3 -> -2
    assert fill_row_statistics(weight, holes)[:, 3].tolist() == [2.0, -2.0]


def test_refill_finds_the_zeros_of_a_plain_bake_and_none_of_a_decoy_bake(bench, random_mask):
    original = bench.sampling.unet
    plain, decoys = masked_unet(original, random_mask), decoy_unet(original, random_mask, seed=0)
    zeros = refill(plain, original, random_mask, "exact zeros", "true values (control)")
    assert zeros.candidates == zeros.true_hits == random_mask.pruned_count  # the zeros ARE the mask
    # the control: true values at the mask give back the original, weight for weight
    back = dict(zeros.unet.named_parameters())
    assert all(torch.equal(back[name], p) for name, p in original.named_parameters())
    assert refill(decoys, original, random_mask, "exact zeros", "low-rank completion").candidates == 0
    found = refill(decoys, original, random_mask, "outliers", "row statistics")
    assert found.candidates == random_mask.pruned_count and 0 <= found.true_hits < found.candidates


def test_refill_by_training_moves_only_the_candidates(bench, random_mask):
    plain = masked_unet(bench.sampling.unet, random_mask)
    missing = as_missing(plain, candidate_sets(plain, random_mask, "exact zeros"))
    trained = retrain(bench, plain, missing, P1_FORGET, RetrainSettings(steps=2, batch=2))
    before, after = dict(plain.named_parameters()), dict(trained.named_parameters())
    changed = {name: before[name] != after[name] for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.endswith("ff.net.2.weight") for name in changed)
    for layer in find_target_layers(plain):
        moved = changed.get(f"{layer.diffusers_name}.weight")
        assert moved is None or not (moved & ~missing[layer.canonical]).any(), layer.canonical
    assert all(p.requires_grad for p in plain.parameters()) and not any(p.requires_grad for p in trained.parameters())


def test_a_reduced_run_and_its_section(bench, random_mask, tmp_path):
    path = tmp_path / "mask.safetensors"
    random_mask.save(path)
    small = DigitsBench(MODEL_DIR, images_per_digit=1, seeds=(0,), sample_steps=4)
    settings = AttackSettings(
        attacks=("wordings", "embedding", "refill"),
        methods=("uce", "learned-mask"),
        n=1,
        wording_n=1,
        embedding_n=1,
        embedding=EmbeddingSettings(budgets=(0, 1), batch=2),
        retrain=RetrainSettings(steps=2, batch=2),
    )
    result = run_attacks(small, settings, path)
    assert list(result.scores) == [ORIGINAL, "closed-form (UCE-like)", LEARNED, LEARNED_DECOYS]
    assert set(result.wordings) == set(result.embedding) == {ORIGINAL, "closed-form (UCE-like)", LEARNED}
    assert {(r.target, r.threat) for r in result.refills} >= {(LEARNED, "mask leaked"), (LEARNED_DECOYS, "outliers")}
    text = section(result, "python -m bench.digits attack ...", plot(result, tmp_path / "a.png"), 1.0)
    assert text.startswith(HEADING) and "Defence targets" in text and (tmp_path / "a.png").stat().st_size > 0
    # a saved run writes the same section again
    save_result(result, tmp_path / "run.json", "python -m bench.digits attack ...", 1.0)
    again, command, wall = load_result(tmp_path / "run.json")
    assert section(again, command, tmp_path / "a.png", wall) == text
    assert P1_FORGET == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "0"], "--n must be at least 1"),
        (["--budgets", "-1"], "--budgets must be >= 0"),
        (["--retrain-lr", "0"], "--retrain-lr > 0"),
        (["--mask", "/no/such/mask.safetensors"], "no such file"),
    ],
)
def test_bad_input_is_one_error_line(args, message, capsys):
    assert main(["attack", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and [line for line in err.splitlines() if line.startswith("error:")] == [
        next(line for line in err.splitlines() if message in line)
    ]


def test_attack_report_needs_a_saved_run(capsys):
    assert main(["attack-report", "/no/such/run.json"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no such file" in errors[0]


def test_fia_is_one_argument_away(bench):
    # --method fia attacks FIA's own P1 mask (for a model on which FIA forgets: issue 12).
    from bench.digits.attacks.targets import FIA, build_targets

    targets = build_targets(bench, [0, 3], ("fia",), None)
    assert [t.name for t in targets] == [ORIGINAL, FIA]
    fia = targets[1]
    assert fia.mask is not None and fia.mask.pruned_count > 0
    originals = {layer.canonical: layer.module.weight.detach() for layer in find_target_layers(bench.sampling.unet)}
    for layer in find_target_layers(fia.unet):  # pruned entries: zeros in the edited copy, not in the original
        pruned = fia.mask.indices[layer.canonical]
        assert bool((layer.module.weight.detach().reshape(-1)[pruned] == 0).all())
        assert bool((originals[layer.canonical].reshape(-1)[pruned] != 0).all()), "the original is untouched"
