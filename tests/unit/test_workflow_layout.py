"""The bundled workflows as a user sees them: nothing covers anything, even after a run.

Checked on the files (workflows/*.json) with the arithmetic of workflows/src/layout.py: the
FIA nodes are taken as tall as their summaries will grow them. The browser test
(tests/e2e) runs the same check on the graph the page holds after a real run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "workflows" / "src"))
import layout  # noqa: E402

WORKFLOWS = sorted((REPO_ROOT / "workflows").glob("*.json"))


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_nothing_overlaps_after_a_run(path):
    problems = layout.layout_problems(load(path), grown=True)
    assert not problems, "\n".join(problems)


def test_the_check_sees_a_grown_summary_cover_the_node_below():
    report = {"id": 1, "type": "FIAMaskReport", "pos": [0, 40], "size": [400, 60]}
    preview = {"id": 2, "type": "PreviewImage", "pos": [0, 150], "size": [400, 300]}
    group = {"title": "① Report", "bounding": [-10, -30, 420, 500], "font_size": 22}
    workflow = {"nodes": [report, preview], "groups": [group]}
    assert layout.layout_problems(workflow, grown=False) == []
    problems = layout.layout_problems(workflow, grown=True)
    assert len(problems) == 1, problems
    assert "#1 FIAMaskReport" in problems[-1] and "#2 PreviewImage" in problems[-1]


def test_the_check_sees_titles_numbering_and_groups():
    groups = [
        {"title": "① A title far too long for its narrow group", "bounding": [0, 0, 200, 100], "font_size": 22},
        {"title": "③ B", "bounding": [150, 0, 200, 100], "font_size": 22},
    ]
    problems = layout.layout_problems({"nodes": [], "groups": groups}, grown=True)
    assert any("not numbered in sequence" in p and "①③" in p for p in problems), problems
    assert any("title is" in p for p in problems), problems
    assert any("overlap" in p for p in problems), problems


def notes(workflow: dict) -> str:
    return "\n".join(n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "MarkdownNote")


def test_titles_are_readable_and_numbered_in_the_order_to_follow():
    """The template browser shows the file names as titles and this pack's list sorted by them
    (web/template_order.js): making a mask comes before applying it."""
    names = [p.stem for p in WORKFLOWS]
    assert [name.split()[:2] for name in names] == [["FIA", str(i)] for i in range(1, len(names) + 1)]
    assert all("_" not in name and "-" not in name for name in names)  # the browser shows these as spaces
    save = next(n for n in names if "save a mask" in n)
    apply = next(n for n in names if "Apply a saved mask" in n)
    assert names.index(save) < names.index(apply)
    assert save in notes(load(REPO_ROOT / "workflows" / f"{apply}.json"))  # the apply note names the file to run


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_a_thumbnail_for_the_template_browser(path):
    """frontend 1.27 shows <name>.jpg next to a pack's workflow on its card."""
    thumbnail = path.with_suffix(".jpg")
    assert thumbnail.is_file(), f"no {thumbnail.name}: python workflows/src/thumbnails.py <screenshots>/loaded"
    data = thumbnail.read_bytes()
    assert data[:3] == b"\xff\xd8\xff", "a JPEG"
    assert 5_000 < len(data) < 120_000


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_the_notes_say_the_defaults_are_for_a_gpu(path):
    workflow = load(path)
    text = notes(workflow)
    assert "sized for a GPU" in text and "On a CPU" in text
    if any(n["type"] == "FIAConceptSaliencyCollector" for n in workflow["nodes"]):
        for widget in ("pairs", "saliency_steps", "resolution"):
            assert f"**{widget}" in text, widget  # named as the collector's widgets are


def test_the_save_note_gives_the_real_size_of_a_mask():
    """An SD 1.5 mask at r2 0.02 holds up to 991,232 indices: 3.97 MB, not kilobytes."""
    (path,) = [p for p in WORKFLOWS if "save a mask" in p.stem]
    text = notes(load(path))
    assert "kilobyte" not in text.lower() and "at most about 4 MB" in text
