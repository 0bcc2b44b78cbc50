"""Turn a UI-format workflow (what ComfyUI's frontend saves) into an API-format prompt.

The frontend does this in the browser before it queues a prompt; the tests need
it to run the workflows bundled in ``workflows/`` through ComfyUI's executor.

What is handled: links, widget values in the order of the node's inputs
(required, then optional), the extra "control after generate" value that the
frontend stores after ``seed``/``noise_seed`` and after inputs declared with
``control_after_generate``, the extra value of image-upload widgets, widgets
converted to inputs, muted nodes (mode 2), bypassed nodes (mode 4: the first
input of the output's type is passed through), Reroute, PrimitiveNode, and
notes. Not handled: subgraphs and group nodes (a ValueError says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MODE_NEVER = 2
MODE_BYPASS = 4
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def widget_names(node_class) -> list[tuple[str, int]]:
    """The widget inputs of a node class, in frontend order, with how many values each stores."""
    spec = node_class.INPUT_TYPES()
    names = []
    for section in ("required", "optional"):
        for name, entry in (spec.get(section) or {}).items():
            kind = entry[0]
            opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            if opts.get("forceInput"):
                continue
            if not (isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES):
                continue
            seed = kind == "INT" and name in ("seed", "noise_seed")
            count = 2 if seed or opts.get("control_after_generate") else 1
            if opts.get("image_upload") or opts.get("video_upload") or opts.get("audio_upload"):
                count += 1
            names.append((name, count))
    return names


def _links(workflow: Mapping) -> dict[int, tuple[int, int, str]]:
    table = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):
            table[link["id"]] = (link["origin_id"], link["origin_slot"], link.get("type"))
        else:
            link_id, from_node, from_slot, _to_node, _to_slot, link_type = link[:6]
            table[link_id] = (from_node, from_slot, link_type)
    return table


def workflow_to_prompt(workflow: Mapping[str, Any], node_classes: Mapping[str, Any]) -> dict[str, dict]:
    """Return ``{node_id: {"class_type": ..., "inputs": {...}}}`` for every node that runs."""
    if workflow.get("definitions", {}).get("subgraphs"):
        raise ValueError("workflows with subgraphs are not supported by this converter")
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = _links(workflow)

    def resolve(link_id: int, want_type: str | None = None) -> Any:
        """The API value behind a link: [node_id, slot] or a PrimitiveNode's value."""
        from_id, from_slot, link_type = links[link_id]
        source = nodes[from_id]
        if source["type"] == "Reroute" or source.get("mode") == MODE_BYPASS:
            link_type = want_type or link_type
            for inp in source.get("inputs", []):
                if inp.get("link") is not None and (source["type"] == "Reroute" or inp.get("type") == link_type):
                    return resolve(inp["link"], link_type)
            raise ValueError(f"node {from_id} ({source['type']}) is bypassed and has no {link_type} input to pass on")
        if source["type"] == "PrimitiveNode":
            return source["widgets_values"][0]
        if source.get("mode") == MODE_NEVER:
            return None
        return [str(from_id), from_slot]

    prompt = {}
    for node_id, node in nodes.items():
        class_type = node["type"]
        if class_type in FRONTEND_ONLY or node.get("mode") in (MODE_NEVER, MODE_BYPASS):
            continue
        if class_type not in node_classes:
            raise ValueError(f"node {node_id}: ComfyUI has no node type {class_type!r} (subgraph or missing pack?)")
        inputs: dict[str, Any] = {}
        values = node.get("widgets_values", [])
        if isinstance(values, dict):
            inputs.update(values)
        else:
            position = 0
            for name, count in widget_names(node_classes[class_type]):
                if position < len(values):
                    inputs[name] = values[position]
                position += count
        for inp in node.get("inputs", []):
            if inp.get("link") is None:
                continue
            value = resolve(inp["link"], inp.get("type"))
            if value is None:
                inputs.pop(inp["name"], None)
            else:
                inputs[inp["name"]] = value
        prompt[str(node_id)] = {
            "class_type": class_type,
            "inputs": inputs,
            "_meta": {"title": node.get("title", class_type)},
        }
    return prompt
