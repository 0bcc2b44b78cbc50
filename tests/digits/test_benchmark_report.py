"""The digits benchmark's report plumbing: sections replaced in place, numbers from rows."""

import numpy as np

from bench.digits.benchmark import ProtocolResult, p1_targets, write_section
from bench.digits.unlearning import Row, harmonic


def _row(method, forget, per_digit):
    return Row(method, forget, np.asarray([per_digit]), 0.01, 1.0)


def test_write_section_replaces_only_its_own_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# R\n\n## 1. Speed\nkeep me\n\n## 3. Digits P1\nold\n\n## 5. Other\nme too\n")
    write_section(results, "## 3. Digits P1\nnew numbers\n")
    text = results.read_text()
    assert "old" not in text and "new numbers" in text
    assert text.index("keep me") < text.index("new numbers") < text.index("me too")


def test_write_section_appends_a_missing_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# R\n\n## 1. Speed\nkeep me\n")
    write_section(results, "## 4. Digits: how many prompt pairs FIA needs (issue 4)\ntable\n")
    assert results.read_text().endswith("table\n") and "keep me" in results.read_text()


def test_rows_compute_forget_preserve_and_overall():
    row = _row("FIA fast", [0, 1], [0.0, 0.2, 1, 1, 1, 1, 0.5, 1, 1, 1])
    assert row.forget_acc() == [0.1]
    assert abs(row.preserve_acc()[0] - 7.5 / 8) < 1e-12
    assert abs(row.overall()[0] - harmonic(7.5 / 8, 0.9)) < 1e-12


def test_p1_targets_report_met_and_missed():
    original = _row("original", [0, 1, 2, 3, 4], [1.0] * 10)
    good = _row("FIA fast", [0, 1, 2, 3, 4], [0.0] * 5 + [0.95] * 5)
    bad = _row("FIA exact", [0, 1, 2, 3, 4], [0.5] * 5 + [0.95] * 5)
    lines = p1_targets(ProtocolResult("P1", original, [original, good, bad], 1, (0,)))
    assert lines[0].endswith(": met") and lines[1].endswith(": MISSED")


def _saved(ks, settings="FIA settings: K = 10"):
    from bench.digits.saved_runs import SavedRun

    rows = []
    for k in ks:
        forget = list(range(k))
        rows += [_row("original", forget, [0.8] * 10), _row("FIA fast", forget, [0.1 * k] * 10)]
    return SavedRun(ProtocolResult("P2", rows[0], rows, 1, (0,)), f"bench k={ks}", settings, 1)


def test_saved_runs_round_trip_and_merge_in_order_of_k(tmp_path):
    from bench.digits.saved_runs import load_run, merge, save_run

    late, early = save_run(_saved([3, 4]), tmp_path / "a.json"), save_run(_saved([1, 2]), tmp_path / "b.json")
    merged = merge([load_run(late), load_run(early)], "P2")
    assert [len(r.forget) for r in merged.result.rows] == [1, 1, 2, 2, 3, 3, 4, 4]
    fia = [r for r in merged.result.rows if r.method == "FIA fast"]
    assert [round(r.accuracy[0, 0], 6) for r in fia] == [0.1, 0.2, 0.3, 0.4]
    assert merged.command == "bench k=[3, 4] ; bench k=[1, 2]"


def test_saved_runs_refuse_mismatched_parts_and_foreign_files(tmp_path):
    import pytest

    from bench.digits.saved_runs import load_run, merge

    with pytest.raises(ValueError, match="cannot be merged"):
        merge([_saved([1]), _saved([2], settings="FIA settings: K = 5")], "P2")
    with pytest.raises(ValueError, match="repeat a method"):
        merge([_saved([1, 2]), _saved([2])], "P2")
    with pytest.raises(ValueError, match="expected saved P1 runs"):
        merge([_saved([1])], "P1")
    foreign = tmp_path / "x.json"
    foreign.write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a saved protocol run"):
        load_run(foreign)
    damaged = tmp_path / "y.json"
    damaged.write_text('{"format": "fia-digits-protocol", "name": "P2"}')
    with pytest.raises(ValueError, match="missing or damaged"):
        load_run(damaged)


def test_random_control_prunes_as_many_weights_per_layer_and_leaves_the_source():
    import torch

    from bench.digits.diagnose import random_pruned_unet
    from fia_engine import find_target_layers
    from fia_engine.testing import tiny_unet

    unet = tiny_unet()
    layers = find_target_layers(unet)
    counts = {layer.canonical: 3 + i for i, layer in enumerate(layers)}
    like = type("Like", (), {"indices": {name: torch.arange(n) for name, n in counts.items()}})()
    before = {layer.canonical: layer.module.weight.detach().clone() for layer in layers}
    edited = random_pruned_unet(unet, like, seed=0)
    for layer in find_target_layers(edited):
        zeroed = int((layer.module.weight == 0).sum()) - int((before[layer.canonical] == 0).sum())
        assert zeroed == counts[layer.canonical]
    for layer in layers:
        assert torch.equal(layer.module.weight, before[layer.canonical])


def test_report_writes_p2_rows_under_the_heading_it_is_given(tmp_path):
    """A P2 run of other methods (ScaPre alone, say) gets a section of its own, section 4 untouched."""
    from bench.digits.__main__ import main
    from bench.digits.saved_runs import save_run

    results = tmp_path / "RESULTS.md"
    results.write_text("# R\n\n## 4. Digits benchmark P2: forgetting more and more digits (issues 4, 5)\nFIA rows\n")
    part = save_run(_saved([1, 2]), tmp_path / "p2.json")
    args = ["report", "--p2", str(part), "--report", str(results), "--plot", str(tmp_path / "p2.png")]
    main([*args, "--p2-heading", "## 10. ScaPre P2"])
    text = results.read_text()
    assert "FIA rows" in text and text.index("FIA rows") < text.index("## 10. ScaPre P2")
    assert "| 2 | FIA fast | 20.0" in text.split("## 10. ScaPre P2")[1]
