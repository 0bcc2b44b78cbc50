"""The saliency check of issue 12, item 4: its AUC, its selections and its refusals."""

import dataclasses

import pytest
import torch

from bench.digits import MODEL_DIR
from bench.digits.__main__ import main
from bench.digits.gate import as_mask
from bench.digits.saliency_check import auc, check, rank_layers
from bench.digits.unlearning import DigitsBench
from fia_engine import find_target_layers
from fia_engine.errors import InvalidInputError


def _brute_auc(score, positives):
    pos = torch.zeros_like(score, dtype=torch.bool)
    pos[positives] = True
    p, n = score[pos][:, None], score[~pos][None, :]
    return float(((p > n).double() + 0.5 * (p == n).double()).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_counting_every_pair_ties_included(seed):
    g = torch.Generator().manual_seed(seed)
    score = torch.randint(0, 6, (200,), generator=g).float()  # many ties
    positives = torch.randperm(200, generator=g)[:37]
    assert auc(score, positives) == pytest.approx(_brute_auc(score, positives), abs=1e-12)
    assert auc(torch.arange(10.0), torch.tensor([8, 9])) == 1.0
    assert auc(torch.arange(10.0), torch.tensor([0, 1])) == 0.0


@pytest.fixture(scope="module")
def bench():
    return DigitsBench(MODEL_DIR, images_per_digit=2, seeds=(0,), sample_steps=2)


def _top_mask(bench, share):
    """The top ``share`` of every layer by |W|: a mask whose weights rank where we know."""
    pruned = {}
    for layer in find_target_layers(bench.sampling.unet):
        w = layer.module.weight.detach().abs().flatten()
        pruned[layer.canonical] = torch.topk(w, int(share * w.numel())).indices.sort().values
    return as_mask(bench.sampling.unet, pruned, "top |W| (test)")


def test_rank_layers_reads_columns_and_shares():
    from fia_engine.masks import FIAMask

    shapes = {"l": (2, 4)}
    mask = FIAMask({"l": torch.tensor([1, 5])}, shapes, "sd1", "f")  # row 0 col 1, row 1 col 1
    score = torch.tensor([0.0, 3, 0, 0, 0, 2, 0, 1])  # column 3 scored only in row 1
    (row,) = rank_layers(mask, {"l": score})
    assert row.learned_share == 0.25 and row.columns_touched == 1 and row.columns == 4
    assert row.in_scored_columns == 1.0 and row.auc == 1.0


def test_check_runs_and_every_selection_has_the_learned_size(bench):
    learned = _top_mask(bench, 0.02)
    ranks, rows = check(bench, learned)
    assert len(ranks) == 14 and all(0.0 <= r.auc <= 1.0 for r in ranks)
    assert rows[0].selection == "none (original)" and len(rows) == 5
    for row in rows[1:]:
        assert row.pruned == pytest.approx(learned.pruned_fraction, abs=0.002)


def test_a_mask_of_another_checkpoint_is_refused(bench):
    learned = _top_mask(bench, 0.01)
    other = dataclasses.replace(learned, weight_signature={k: v + 1.0 for k, v in learned.weight_signature.items()})
    with pytest.raises(InvalidInputError, match="another checkpoint"):
        check(bench, other)


def test_bad_input_is_one_line(tmp_path, capsys):
    corrupt = tmp_path / "m.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    assert main(["saliency-check", str(corrupt)]) == 2
    assert main(["saliency-check", str(corrupt), "--n", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--n and --sample-steps" in err[1]


def test_contrasts_rebuild_fia_and_order_as_defined(bench):
    from bench.digits.benchmark import P1_FORGET
    from bench.digits.contrasts import fia_rows, with_contrast
    from bench.digits.saliency_check import collect_p1
    from bench.digits.unlearning import FiaSettings
    from fia_engine import fuse, localize_concepts

    settings = FiaSettings()
    saliency = collect_p1(bench, P1_FORGET, settings, keep_contrast=True)
    paper = with_contrast(saliency, "paper")
    plain = fuse(localize_concepts(saliency, settings.r1, settings.r2), settings.alpha)
    rebuilt = fuse(localize_concepts(paper, settings.r1, settings.r2), settings.alpha)
    assert {k: v.tolist() for k, v in plain.indices.items()} == {k: v.tolist() for k, v in rebuilt.indices.items()}
    no_margin, two_sided = with_contrast(saliency, "no-margin"), with_contrast(saliency, "two-sided")
    for name, layer in paper.layers.items():
        assert bool((no_margin.layers[name].column_scores >= layer.column_scores).all())
        assert bool((two_sided.layers[name].column_scores >= no_margin.layers[name].column_scores).all())
    rows = fia_rows(bench, saliency, ["paper", "two-sided"], [0.01, 0.02], settings, P1_FORGET)
    assert [(r.contrast, r.r2) for r in rows] == [
        ("paper", 0.01),
        ("paper", 0.02),
        ("two-sided", 0.01),
        ("two-sided", 0.02),
    ]
    assert rows[0].pruned == pytest.approx(plain.pruned_fraction)
    assert rows[0].pruned < rows[1].pruned and all(0.0 <= r.forget <= 1.0 for r in rows)


def test_a_collection_without_contrast_terms_is_refused(bench):
    from bench.digits.benchmark import P1_FORGET
    from bench.digits.contrasts import with_contrast
    from bench.digits.saliency_check import collect_p1
    from bench.digits.unlearning import FiaSettings

    with pytest.raises(ValueError, match="keep_contrast"):
        with_contrast(collect_p1(bench, P1_FORGET, FiaSettings()), "no-margin")
