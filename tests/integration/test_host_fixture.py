"""The fixtures themselves: a V3 pack loads and runs, a txt2img graph runs on a random SD 1.5."""

from __future__ import annotations

import json
import textwrap

import comfy_host
import pytest
import torch

TINY_PACK = """
from typing_extensions import override

import comfy.utils
from comfy_api.latest import ComfyExtension, io

Numbers = io.Custom("FIA_TEST_NUMBERS")


class MakeNumbers(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIATestMakeNumbers",
            display_name="FIA Test Make Numbers",
            category="FIA/test",
            description="Makes a tensor of numbers.",
            inputs=[io.Int.Input("count", default=3, min=1, max=100, tooltip="How many."),
                    io.Float.Input("scale", default=1.0, min=0.0, max=10.0, step=0.1, tooltip="Factor.")],
            outputs=[Numbers.Output(tooltip="The numbers.")],
        )

    @classmethod
    def execute(cls, count: int, scale: float) -> io.NodeOutput:
        bar = comfy.utils.ProgressBar(count)
        for i in range(count):
            bar.update_absolute(i + 1, count)
        return io.NodeOutput(torch.arange(count, dtype=torch.float32) * scale)


class SumNumbers(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIATestSumNumbers",
            display_name="FIA Test Sum Numbers",
            category="FIA/test",
            inputs=[Numbers.Input("numbers"), io.String.Input("label", multiline=True, default="sum")],
            outputs=[io.Float.Output()],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, numbers, label: str) -> io.NodeOutput:
        total = float(numbers.sum())
        return io.NodeOutput(total, ui={"text": [f"{label}={total}"]})


class TinyExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [MakeNumbers, SumNumbers]


async def comfy_entrypoint() -> TinyExtension:
    return TinyExtension()
"""


@pytest.fixture(scope="module")
def tiny_pack(comfy, tmp_path_factory) -> list[str]:
    pack = tmp_path_factory.mktemp("packs") / "fia_tiny_pack"
    pack.mkdir()
    (pack / "__init__.py").write_text("import torch\n" + textwrap.dedent(TINY_PACK))
    return comfy.load_pack(pack)


def txt2img_workflow(ckpt: str, seed: int, steps: int = 2, batch: int = 1) -> dict:
    """A UI-format workflow as the frontend saves it (nodes, links, widgets_values)."""

    def node(id_, type_, inputs=(), outputs=(), widgets=(), mode=0):
        return {
            "id": id_,
            "type": type_,
            "mode": mode,
            "inputs": [{"name": n, "type": t, "link": link} for n, t, link in inputs],
            "outputs": [{"name": n, "type": t, "links": links} for n, t, links in outputs],
            "widgets_values": list(widgets),
        }

    return {
        "nodes": [
            node(
                4,
                "CheckpointLoaderSimple",
                outputs=[("MODEL", "MODEL", [1]), ("CLIP", "CLIP", [3, 5]), ("VAE", "VAE", [8])],
                widgets=[ckpt],
            ),
            node(
                6,
                "CLIPTextEncode",
                inputs=[("clip", "CLIP", 3)],
                outputs=[("CONDITIONING", "CONDITIONING", [4])],
                widgets=["a photo of a cat"],
            ),
            node(
                7,
                "CLIPTextEncode",
                inputs=[("clip", "CLIP", 5)],
                outputs=[("CONDITIONING", "CONDITIONING", [6])],
                widgets=["blurry"],
            ),
            node(5, "EmptyLatentImage", outputs=[("LATENT", "LATENT", [2])], widgets=[64, 64, batch]),
            node(
                3,
                "KSampler",
                inputs=[
                    ("model", "MODEL", 1),
                    ("positive", "CONDITIONING", 4),
                    ("negative", "CONDITIONING", 6),
                    ("latent_image", "LATENT", 2),
                ],
                outputs=[("LATENT", "LATENT", [7])],
                widgets=[seed, "fixed", steps, 7.5, "euler", "normal", 1.0],
            ),
            node(
                8, "VAEDecode", inputs=[("samples", "LATENT", 7), ("vae", "VAE", 8)], outputs=[("IMAGE", "IMAGE", [9])]
            ),
            node(9, "SaveImage", inputs=[("images", "IMAGE", 9)], widgets=["fia_test"]),
            node(10, "Note", widgets=["frontend-only, dropped by the converter"]),
        ],
        "links": [
            [1, 4, 0, 3, 0, "MODEL"],
            [2, 5, 0, 3, 3, "LATENT"],
            [3, 4, 1, 6, 0, "CLIP"],
            [4, 6, 0, 3, 1, "CONDITIONING"],
            [5, 4, 1, 7, 0, "CLIP"],
            [6, 7, 0, 3, 2, "CONDITIONING"],
            [7, 3, 0, 8, 0, "LATENT"],
            [8, 4, 2, 8, 1, "VAE"],
            [9, 8, 0, 9, 0, "IMAGE"],
        ],
        "version": 0.4,
    }


def test_comfyui_path_refuses_a_non_comfy_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path))
    with pytest.raises(comfy_host.ComfyUnavailable, match="nodes.py is missing"):
        comfy_host.comfyui_path()


def test_v3_pack_loads_and_runs(comfy, tiny_pack):
    assert tiny_pack == ["FIATestMakeNumbers", "FIATestSumNumbers"]
    result = comfy.run_prompt(
        {
            "1": {"class_type": "FIATestMakeNumbers", "inputs": {"count": 4, "scale": 0.5}},
            "2": {"class_type": "FIATestSumNumbers", "inputs": {"numbers": ["1", 0], "label": "s"}},
        }
    )
    assert torch.equal(result.outputs["1"][0], torch.tensor([0.0, 0.5, 1.0, 1.5]))
    assert result.outputs["2"] == (3.0,)
    assert result.ui["2"] == {"text": ["s=3.0"]}
    assert ("1", 4, 4) in result.progress


def test_invalid_prompt_raises_with_comfy_reasons(comfy, tiny_pack):
    with pytest.raises(comfy_host.PromptValidationError, match="count") as info:
        comfy.run_prompt(
            {
                "1": {"class_type": "FIATestMakeNumbers", "inputs": {"count": 1000, "scale": 1.0}},
                "2": {"class_type": "FIATestSumNumbers", "inputs": {"numbers": ["1", 0], "label": "s"}},
            }
        )
    assert "1" in info.value.node_errors


def test_txt2img_workflow_on_random_sd15(comfy, sd15_ckpt, tmp_path):
    workflow = json.loads(json.dumps(txt2img_workflow(sd15_ckpt, seed=1234)))  # as if read from a file
    prompt = comfy.workflow_to_prompt(workflow)
    assert sorted(prompt) == ["3", "4", "5", "6", "7", "8", "9"]
    assert prompt["3"]["inputs"]["seed"] == 1234 and prompt["3"]["inputs"]["steps"] == 2
    assert prompt["3"]["inputs"]["cfg"] == 7.5 and prompt["3"]["inputs"]["sampler_name"] == "euler"

    result = comfy.run_prompt(prompt, fresh=True)

    model = result.outputs["4"][0]
    assert type(model.model.model_config).__name__ == "SD15"
    assert result.outputs["5"][0]["samples"].shape == (1, 4, 8, 8)
    image = result.outputs["8"][0]
    assert image.shape == (1, 64, 64, 3)
    assert torch.isfinite(image).all() and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0
    saved = result.ui["9"]["images"]
    assert len(saved) == 1 and saved[0]["type"] == "output" and saved[0]["filename"].startswith("fia_test")
