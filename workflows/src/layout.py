"""Where the boxes of a UI-format workflow are on the canvas, and what overlaps.

Read by build_workflows.py (it refuses to write a layout with problems), by the unit test
of the bundled workflows and by the browser test (on the graph the page serialises after a
run, with the sizes the summaries grew the nodes to).

LiteGraph draws a node's title bar *above* ``pos``; a group's title bar is the top of its
``bounding``. After a run web/fia_summary.js appends a summary to every FIA node and grows
it; ``summary_height`` mirrors that file's arithmetic so that a layout can be checked
before anything ran.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

NODE_TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT
GROUP_TITLE_PAD = 4  # the group title is drawn 4 px in from the left edge (LGraphGroup)
CIRCLED = "①②③④⑤⑥⑦⑧⑨⑩"

# web/fia_summary.js: MARGIN, LINE, CHART + AXIS + 6, MAX_CONCEPT_BARS
_MARGIN, _LINE, _CHART_BLOCK, _MAX_CONCEPT_BARS = 10, 15, 64 + 14 + 6, 12
_WIDGET_GAP = 8  # LiteGraph puts a few px between widgets; round up
_MASK_NODES = {"FIAAgnosticFusion", "FIAApplyMask", "FIALoadMask", "FIAMaskReport", "FIASaveMask"}
_SCAPRE_NODES = {"FIAScaPreErase", "FIAApplyScaPreEdit", "FIALoadScaPreEdit", "FIASaveScaPreEdit", "FIASaveScaPreLoRA"}
_SAVING = {"FIASaveMask", "FIASaveScaPreEdit", "FIASaveScaPreLoRA"}


def summary_height(node_type: str, concepts: int) -> int:
    """Height (px) the summary widget adds to a node of this type after a run; 0 for other nodes.

    The payloads are those of nodes/summary.py and nodes/saliency_node.py; the line counts are
    those of summaryLines() in web/fia_summary.js for them.
    """
    bars = 0
    chart = True
    if node_type == "FIAConceptSaliencyCollector":
        lines, chart = 3, False  # concepts, rows and steps, mode and family
    elif node_type == "FIANeuronLocalizer":
        lines, chart = 3, False  # concepts, "Selected per concept", mode and family
        bars = min(concepts, _MAX_CONCEPT_BARS)
    elif node_type in _MASK_NODES:
        lines = 4  # concepts, pruned, agnostic kept, mode and family
    elif node_type in _SCAPRE_NODES:
        lines = 5  # concepts, anchor, projections, stored bytes, mode and family
    else:
        return 0
    lines += node_type in _SAVING  # "Saved as ..."
    height = _MARGIN + (lines + bars) * _LINE + (_CHART_BLOCK if chart else 0) + _MARGIN / 2
    return math.ceil(height) + _WIDGET_GAP


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float

    @property
    def right(self) -> float:
        return self.x + self.w

    @property
    def bottom(self) -> float:
        return self.y + self.h

    def overlaps(self, other: Rect) -> bool:
        """True when the two share an area (touching edges do not count)."""
        return self.x < other.right and other.x < self.right and self.y < other.bottom and other.y < self.bottom

    def contains(self, other: Rect) -> bool:
        return self.x <= other.x and self.y <= other.y and other.right <= self.right and other.bottom <= self.bottom

    def __str__(self) -> str:
        return f"[{self.x:g}, {self.y:g}, {self.w:g} x {self.h:g}]"


def node_label(node: dict) -> str:
    return f"#{node['id']} {node.get('title') or node['type']}"


def concept_count(workflow: dict) -> int:
    """How many concepts the workflow's collector or ScaPre node lists (1 when none does)."""
    for node in workflow["nodes"]:
        if node["type"] in ("FIAConceptSaliencyCollector", "FIAScaPreErase"):
            return len([line for line in str(node["widgets_values"][0]).splitlines() if line.strip()])
    return 1


def node_rect(node: dict, grow_by: float = 0) -> Rect:
    """The node on the canvas, title bar included, ``grow_by`` px taller at the bottom."""
    x, y = node["pos"]
    w, h = node["size"]
    return Rect(x, y - NODE_TITLE_HEIGHT, w, h + NODE_TITLE_HEIGHT + grow_by)


def group_title_height(group: dict) -> float:
    """LGraphGroup's title bar: the node title height, or more for a large font."""
    return max(NODE_TITLE_HEIGHT, 1.4 * group.get("font_size", 24))


def group_rect(group: dict) -> Rect:
    return Rect(*group["bounding"])


def group_body(group: dict) -> Rect:
    x, y, w, h = group["bounding"]
    title = group_title_height(group)
    return Rect(x, y + title, w, h - title)


# Widths of Arial's glyphs in em (rounded up); the browser test measures the real text instead.
_NARROW = set("iljtfr.,;:'|!() ")
_WIDE = set("mwMW@%")


def estimated_text_width(text: str, font_size: float) -> float:
    """An upper estimate of the width of ``text`` in ``font_size`` px sans-serif."""
    em = 0.0
    for char in text:
        if ord(char) > 0x7F:
            em += 1.0  # circled digits, arrows: a full em at most
        elif char in _NARROW:
            em += 0.34
        elif char in _WIDE or char.isupper():
            em += 0.85 if char in _WIDE else 0.72
        else:
            em += 0.58
    return em * font_size


def group_number(title: str) -> int | None:
    """The step number of a group title that starts with a circled digit (① -> 1), else None."""
    match = re.match(f"[{CIRCLED}]", title)
    return CIRCLED.index(match.group(0)) + 1 if match else None


def layout_problems(workflow: dict, *, grown: bool, title_widths: dict[str, float] | None = None) -> list[str]:
    """Everything wrong with where the workflow's boxes are, one line each; [] when all is well.

    grown: add to every FIA node the height its summary will take after a run (for a file
    straight from disk). Leave it off for a graph read from the page after a run: its sizes are
    already the grown ones.
    title_widths: measured widths of the group titles (by title); estimated when not given.
    """
    problems: list[str] = []
    groups = workflow.get("groups", [])
    concepts = concept_count(workflow)

    numbers = [group_number(g["title"]) for g in groups]
    if None in numbers:
        problems.append(
            f"group titles without a step number: {[g['title'] for g in groups if not group_number(g['title'])]}"
        )
    elif sorted(numbers) != list(range(1, len(groups) + 1)):
        problems.append(f"group steps are {''.join(CIRCLED[n - 1] for n in sorted(numbers))}, not numbered in sequence")

    for i, a in enumerate(groups):
        font = a.get("font_size", 24)
        width = (title_widths or {}).get(a["title"]) or estimated_text_width(a["title"], font)
        if width + 2 * GROUP_TITLE_PAD > a["bounding"][2]:
            problems.append(f"group '{a['title']}': title is {width:.0f} px wide, the group {a['bounding'][2]:g} px")
        for b in groups[i + 1 :]:
            if group_rect(a).overlaps(group_rect(b)):
                problems.append(f"groups '{a['title']}' {group_rect(a)} and '{b['title']}' {group_rect(b)} overlap")

    rects = {}
    for node in workflow["nodes"]:
        grow = summary_height(node["type"], concepts) if grown else 0
        rect = node_rect(node, grow)
        rects[node["id"]] = rect
        touching = [g for g in groups if group_rect(g).overlaps(rect)]
        inside = [g for g in touching if group_body(g).contains(rect)]
        what = node_label(node) + (f" (after a run, +{grow} px)" if grow else "")
        if not touching and node["type"] == "MarkdownNote":
            continue  # a note may stand on its own, e.g. the introduction
        if len(touching) != 1 or len(inside) != 1:
            where = ", ".join(f"'{g['title']}' body {group_body(g)}" for g in touching) or "no group"
            problems.append(f"{what} {rect} is not inside one group's body: it meets {where}")

    nodes = workflow["nodes"]
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            if rects[a["id"]].overlaps(rects[b["id"]]):
                problems.append(
                    f"{node_label(a)} {rects[a['id']]} and {node_label(b)} {rects[b['id']]} overlap"
                    + (" (after a run)" if grown else "")
                )
    return problems
