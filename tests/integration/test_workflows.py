"""The bundled workflows (workflows/*.json) load, validate and run in a real ComfyUI.

Each workflow is converted to an API prompt the way the frontend does, shrunk to tiny
settings by widget name (64 px, 2 prompt pairs, 2 saliency steps, 2 sampler steps) and
executed against a random SD 1.5 checkpoint. The load-mask workflow runs after the save
workflow has written its mask into a temporary ``fia_masks`` folder; the ScaPre workflow
saves its edit there too. Their layout is checked without ComfyUI by
tests/unit/test_workflow_layout.py, and after a run in a real browser by tests/e2e.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from comfy_workflow import FRONTEND_ONLY, widget_names

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO_ROOT / "workflows").glob("*.json"))
SAVE = "FIA 4 Make and save a mask.json"
LOAD = "FIA 5 Apply a saved mask.json"
SCAPRE = "FIA 6 ScaPre erase ten objects in seconds.json"
IMAGENETTE = [
    "tench",
    "English springer",
    "cassette player",
    "chain saw",
    "church",
    "French horn",
    "garbage truck",
    "gas pump",
    "golf ball",
    "parachute",
]
EXPECTED_CONCEPTS = {
    "FIA 1 Forget ten Imagenette objects.json": IMAGENETTE,
    "FIA 2 Forget five artist styles.json": ["Van Gogh", "Picasso", "Rembrandt", "Andy Warhol", "Caravaggio"],
    "FIA 3 Forget explicit content.json": ["nude", "naked"],
    SAVE: ["Van Gogh"],
    LOAD: ["Van Gogh"],
    SCAPRE: IMAGENETTE,
}
MASK_KEYS = {"concepts", "pruned", "total", "pruned_percent", "agnostic_kept", "alpha", "mode", "family", "layers"}


def load(name: str) -> dict:
    return json.loads((REPO_ROOT / "workflows" / name).read_text(encoding="utf-8"))


def tiny(prompt: dict, ckpt: str, **extra) -> dict:
    """Shrink a converted prompt by widget name; a missing widget name is an error, not a skip."""
    settings = {
        "CheckpointLoaderSimple": {"ckpt_name": ckpt},
        "FIAConceptSaliencyCollector": {"resolution": 64, "pairs": 2, "steps": 10, "saliency_steps": 2},
        "KSampler": {"steps": 2},
        "EmptyLatentImage": {"width": 64, "height": 64, "batch_size": 1},
    }
    for class_type, values in extra.items():
        settings.setdefault(class_type, {}).update(values)
    for node in prompt.values():
        for name, value in settings.get(node["class_type"], {}).items():
            assert name in node["inputs"], f"{node['class_type']} has no widget {name!r} in the workflow"
            node["inputs"][name] = value
    return prompt


def nodes_of(prompt: dict, class_type: str) -> list[str]:
    return [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]


@pytest.fixture(scope="module")
def masks_dir(comfy, fia_pack, tmp_path_factory) -> Path:
    """A temporary fia_masks folder placed first, so that saves land there and not in ComfyUI's tree."""
    folder = tmp_path_factory.mktemp("fia_masks")
    comfy.folder_paths.add_model_folder_path("fia_masks", str(folder), is_default=True)
    return folder


def test_the_six_workflows_are_there():
    assert [p.name for p in WORKFLOWS] == sorted(EXPECTED_CONCEPTS)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_no_missing_nodes_and_every_widget_present(comfy, fia_pack, path):
    workflow = json.loads(path.read_text(encoding="utf-8"))
    assert workflow["version"] == 0.4 and workflow["groups"], "UI format with groups"
    notes = [n for n in workflow["nodes"] if n["type"] in ("MarkdownNote", "Note")]
    assert len(notes) >= 2, "every workflow explains its steps"
    missing = sorted(
        {
            n["type"]
            for n in workflow["nodes"]
            if n["type"] not in FRONTEND_ONLY and n["type"] not in comfy.nodes.NODE_CLASS_MAPPINGS
        }
    )
    assert missing == [], f"{path.name} uses node types ComfyUI does not know: {missing}"
    used = {n["type"] for n in workflow["nodes"]}
    if path.name == SCAPRE:
        assert {"FIAScaPreErase", "FIASaveScaPreEdit", "ImageStitch"} <= used
    else:
        assert {"FIAApplyMask", "FIAMaskReport"} <= used or path.name == SAVE
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        cls = comfy.node_class(node["type"])
        want = sum(count for _, count in widget_names(cls))
        assert len(node["widgets_values"]) == want, f"node {node['id']} ({node['type']}): widgets_values"
        spec = cls.INPUT_TYPES()
        for inp in node["inputs"]:
            assert inp["name"] in spec["required"] or inp["name"] in spec.get("optional", {}), inp
        for name, entry in spec["required"].items():
            if not isinstance(entry[0], list) and entry[0] not in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                linked = [i for i in node["inputs"] if i["name"] == name and i["link"] is not None]
                assert linked, f"node {node['id']} ({node['type']}): required input {name} is not connected"


def check_before_after(result, prompt) -> None:
    """Same seed, same prompt: the original and the unlearned model give different images, side by side."""
    before, after = (result.outputs[i][0] for i in nodes_of(prompt, "VAEDecode"))
    assert before.shape == after.shape == (1, 64, 64, 3)
    assert not torch.equal(before, after), "the mask changed nothing in the image"
    (stitch,) = nodes_of(prompt, "ImageStitch")
    assert result.outputs[stitch][0].shape == (1, 64, 64 * 2 + 8, 3)
    (save,) = nodes_of(prompt, "SaveImage")
    assert len(result.ui[save]["images"]) == 1


def check_mask_summaries(result, prompt, concepts: list[str]) -> None:
    for class_type in ("FIAAgnosticFusion", "FIAApplyMask", "FIAMaskReport", "FIALoadMask", "FIASaveMask"):
        for node_id in nodes_of(prompt, class_type):
            (summary,) = result.ui[node_id]["fia_summary"]
            assert MASK_KEYS <= set(summary), class_type
            assert summary["concepts"] == concepts
            assert 0 < summary["pruned"] < summary["total"] and summary["pruned_percent"] > 0
            assert len(summary["layers"]) == 16 and all(0 <= pct <= 100 for _, pct in summary["layers"])
    for node_id in nodes_of(prompt, "FIAMaskReport"):
        chart = result.outputs[node_id][0]
        assert chart.ndim == 4 and chart.shape[-1] == 3


@pytest.mark.parametrize(
    "name",
    [
        "FIA 1 Forget ten Imagenette objects.json",
        "FIA 2 Forget five artist styles.json",
        "FIA 3 Forget explicit content.json",
    ],
)
def test_unlearning_workflow_runs(comfy, fia_pack, sd15_ckpt, masks_dir, name):
    prompt = tiny(comfy.workflow_to_prompt(load(name)), sd15_ckpt)
    result = comfy.run_prompt(prompt)

    (collector,) = nodes_of(prompt, "FIAConceptSaliencyCollector")
    (summary,) = result.ui[collector]["fia_summary"]
    concepts = EXPECTED_CONCEPTS[name]
    assert summary["concepts"] == concepts and summary["steps"] == 2 and summary["family"] == "SD1.x"
    assert summary["rows"] == 2 * (len(concepts) + 1)  # pairs x (each concept + the shared base prompt)
    (localizer,) = nodes_of(prompt, "FIANeuronLocalizer")
    (selected,) = result.ui[localizer]["fia_summary"]
    assert list(selected["selected_percent"]) == concepts
    r2 = prompt[localizer]["inputs"]["r2"]
    assert selected["r2"] == {c: r2 for c in concepts}  # per concept (no overrides in the examples)
    (fusion,) = nodes_of(prompt, "FIAAgnosticFusion")
    assert result.ui[fusion]["fia_summary"][0]["alpha"] == prompt[fusion]["inputs"]["alpha"]
    check_mask_summaries(result, prompt, concepts)
    check_before_after(result, prompt)


def test_saved_mask_is_found_by_the_load_workflow(comfy, fia_pack, sd15_ckpt, masks_dir):
    save_prompt = tiny(comfy.workflow_to_prompt(load(SAVE)), sd15_ckpt)
    (saver,) = nodes_of(save_prompt, "FIASaveMask")
    save_prompt[saver]["inputs"]["name"] = "van_gogh_test"
    result = comfy.run_prompt(save_prompt)
    assert result.ui[saver]["fia_summary"][0]["saved_as"] == "van_gogh_test.safetensors"
    assert (masks_dir / "van_gogh_test.safetensors").is_file()
    check_mask_summaries(result, save_prompt, ["Van Gogh"])

    # The combo of Load Mask is read again from the folder: the new file is offered.
    assert "van_gogh_test.safetensors" in combo_options(comfy, "FIALoadMask", "mask_name")

    load_prompt = tiny(
        comfy.workflow_to_prompt(load(LOAD)), sd15_ckpt, FIALoadMask={"mask_name": "van_gogh_test.safetensors"}
    )
    result = comfy.run_prompt(load_prompt)
    check_mask_summaries(result, load_prompt, ["Van Gogh"])
    check_before_after(result, load_prompt)


def test_scapre_workflow_uses_the_node_defaults(comfy, fia_pack):
    """The example shows ScaPre as published: every widget but the concept list at the node's default."""
    (node,) = [n for n in load(SCAPRE)["nodes"] if n["type"] == "FIAScaPreErase"]
    spec = comfy.node_class("FIAScaPreErase").INPUT_TYPES()
    names = [name for name, _ in widget_names(comfy.node_class("FIAScaPreErase"))]
    defaults = {name: entry[1].get("default") for section in spec.values() for name, entry in section.items()}
    values = dict(zip(names, node["widgets_values"], strict=True))
    assert values.pop("concepts").splitlines() == IMAGENETTE
    assert values == {name: defaults[name] for name in values}


def test_scapre_workflow_runs_and_saves_its_edit(comfy, fia_pack, sd15_ckpt, masks_dir):
    prompt = tiny(
        comfy.workflow_to_prompt(load(SCAPRE)), sd15_ckpt, FIASaveScaPreEdit={"name": "imagenette_scapre_test"}
    )
    result = comfy.run_prompt(prompt)

    (erase,) = nodes_of(prompt, "FIAScaPreErase")
    (summary,) = result.ui[erase]["fia_summary"]
    assert summary["method"] == "ScaPre" and summary["concepts"] == IMAGENETTE and summary["anchor"] == ""
    assert summary["family"] == "SD1.x" and summary["layer_count"] == len(summary["layers"]) == 32
    assert summary["mode"] == "scapre" and summary["scale"] == 1.0
    assert 0 < summary["stored_bytes"] < summary["dense_bytes"] / 4
    assert all(change > 0 for _, change in summary["layers"])
    (saver,) = nodes_of(prompt, "FIASaveScaPreEdit")
    assert result.ui[saver]["fia_summary"][0]["saved_as"] == "imagenette_scapre_test.safetensors"
    assert (masks_dir / "imagenette_scapre_test.safetensors").is_file()
    # Load ScaPre Edit offers the new file; Load Mask, which reads FIA masks only, does not.
    assert "imagenette_scapre_test.safetensors" in combo_options(comfy, "FIALoadScaPreEdit", "edit_name")
    assert "imagenette_scapre_test.safetensors" not in combo_options(comfy, "FIALoadMask", "mask_name")
    check_before_after(result, prompt)


def combo_options(comfy, node_id: str, name: str) -> list[str]:
    entry = comfy.node_class(node_id).INPUT_TYPES()["required"][name]
    return entry[0] if isinstance(entry[0], list) else entry[1]["options"]  # V1 list or V3 "COMBO"
