"""The FIA nodes inside a real ComfyUI (in-process, CPU, random SD 1.5 checkpoint).

Skipped without COMFYUI_PATH (see README.md beside this file).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from comfy_host import PromptExecutionError, PromptValidationError

NODE_IDS = [
    "FIAAgnosticFusion",
    "FIAApplyMask",
    "FIAApplyScaPreEdit",
    "FIAConceptSaliencyCollector",
    "FIALoadMask",
    "FIALoadScaPreEdit",
    "FIAMaskReport",
    "FIANeuronLocalizer",
    "FIASaveMask",
    "FIASaveScaPreEdit",
    "FIASaveScaPreLoRA",
    "FIAScaPreErase",
]
TINY = {"pairs": 2, "steps": 10, "saliency_steps": 2, "resolution": 64}


def collector_inputs(**over) -> dict:
    inputs = {
        "concepts": "dog\ncat",
        "kind": "object",
        "cfg": 7.5,
        "seed": 0,
        "mode": "fast",
        "r1": 0.05,
        "include_uncond": False,
        "batch_size": 16,
        **TINY,
    }
    inputs.update(over)
    return inputs


def sampling_nodes(model: list, negative_text: str, steps: int = 2) -> dict:
    """Prompt -> 64 px latent -> KSampler on `model` -> decode -> preview, as nodes 6 to 11."""
    return {
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a dog in a garden"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": negative_text}},
        "8": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "9": {
            "class_type": "KSampler",
            "inputs": {
                "model": model,
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["8", 0],
                "seed": 1,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}},
    }


def fia_graph(ckpt: str, r2=0.01, alpha=0.6, strength=1.0, **collector) -> dict:
    """Checkpoint -> collector -> localizer -> fusion -> apply -> sample; report as output."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {
            "class_type": "FIAConceptSaliencyCollector",
            "inputs": {"model": ["1", 0], "clip": ["1", 1], **collector_inputs(**collector)},
        },
        "3": {"class_type": "FIANeuronLocalizer", "inputs": {"saliency": ["2", 0], "r1": 0.05, "r2": r2}},
        "4": {
            "class_type": "FIAAgnosticFusion",
            "inputs": {"concept_masks": ["3", 0], "alpha": alpha, "protect_agnostic": True},
        },
        "5": {"class_type": "FIAApplyMask", "inputs": {"model": ["1", 0], "mask": ["4", 0], "strength": strength}},
        **sampling_nodes(model=["5", 0], negative_text=""),
        "12": {"class_type": "FIAMaskReport", "inputs": {"mask": ["4", 0]}},
        "13": {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}},
    }


def pack_module(comfy, name: str = "nodes.host"):
    """A module of the pack as ComfyUI imported it (the pack's folder path is its package name).

    The tests use the pack's own copy of fia_engine, so that its classes are the ones the nodes raise.
    """
    package = comfy.node_class("FIAApplyMask").__module__.rsplit(".nodes", 1)[0]
    return importlib.import_module(f"{package}.{name}")


def sample(model, clip, seed: int = 3):
    import nodes

    positive = nodes.CLIPTextEncode().encode(clip, "a church near a lake")[0]
    negative = nodes.CLIPTextEncode().encode(clip, "")[0]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return nodes.common_ksampler(model, seed, 2, 7.0, "euler", "normal", positive, negative, latent)[0]["samples"]


def no_hooks_left(model) -> bool:
    return all(not m._forward_hooks for m in model.model.diffusion_model.modules())


# --- loading and schema ---------------------------------------------------------------------


def test_pack_registers_every_node_with_tooltips(comfy, fia_pack):
    assert fia_pack == NODE_IDS
    for node_id in NODE_IDS:
        schema = comfy.node_class(node_id).define_schema()
        assert schema.description, node_id
        for socket in list(schema.inputs) + list(schema.outputs):
            assert socket.tooltip, f"{node_id}.{getattr(socket, 'id', socket)} has no tooltip"


# --- the graph ------------------------------------------------------------------------------


def test_full_graph_runs_and_reports(comfy, fia_pack, sd15_ckpt):
    result = comfy.run_prompt(fia_graph(sd15_ckpt, seed=11))
    mask = result.outputs["4"][0]
    assert mask.metadata["concepts"] == ["dog", "cat"]
    assert 0 < mask.pruned_fraction < 0.02
    summary = result.ui["12"]["fia_summary"][0]
    assert summary["concepts"] == ["dog", "cat"] and len(summary["layers"]) == 16
    image = result.outputs["12"][0]
    assert image.shape[0] == 1 and image.shape[-1] == 3
    # the collector's progress bar advanced step by step
    steps = [value for node, value, total in result.progress if node == "2"]
    assert steps == [1, 2]


def test_changing_r2_alpha_strength_does_not_recollect(comfy, fia_pack, sd15_ckpt):
    first = comfy.run_prompt(fia_graph(sd15_ckpt, seed=21))
    assert any(node == "2" for node, _, _ in first.progress)
    for change in ({"r2": 0.02}, {"alpha": 0.9}, {"strength": 0.5}):
        again = comfy.run_prompt(fia_graph(sd15_ckpt, seed=21, **change))
        assert not any(node == "2" for node, _, _ in again.progress), f"collector re-ran after {change}"
        assert again.outputs["2"][0] is first.outputs["2"][0]
    assert (
        comfy.run_prompt(fia_graph(sd15_ckpt, seed=21, r2=0.02)).outputs["4"][0].pruned_count
        > first.outputs["4"][0].pruned_count
    )


# --- the input model is untouched ---------------------------------------------------------------


def test_original_model_bit_identical_after_patched_model_ran(comfy, fia_pack, sd15):
    host = pack_module(comfy)
    CollectionSettings = pack_module(comfy, "fia_engine.diffusers_runner").CollectionSettings
    build_prompt_plan = pack_module(comfy, "fia_engine.prompts").build_prompt_plan

    model, clip, _ = sd15
    before = sample(model, clip)
    settings = CollectionSettings(**TINY, seed=5)
    saliency = host.collect_saliency(model, clip, build_prompt_plan("church", "object", 2), settings)
    mask = _fuse(comfy, saliency)
    patched = host.apply_mask(model, mask, 1.0)
    after_patched = sample(patched, clip)
    assert not torch.equal(before, after_patched), "the mask changed nothing"
    assert torch.equal(before, sample(model, clip)), "the original model changed"
    assert no_hooks_left(model)
    assert not model.patches, "patches leaked into the input model"


def _fuse(comfy, saliency):
    engine = pack_module(comfy, "fia_engine")
    return engine.fuse(engine.localize_concepts(saliency, 0.05, 0.01), 0.6)


def test_interrupt_stops_collection_cleanly(comfy, fia_pack, sd15):
    import comfy.model_management as mm

    host = pack_module(comfy)
    CollectionSettings = pack_module(comfy, "fia_engine.diffusers_runner").CollectionSettings
    build_prompt_plan = pack_module(comfy, "fia_engine.prompts").build_prompt_plan

    model, clip, _ = sd15
    before = sample(model, clip, seed=9)
    seen = []

    def progress(done, total):
        seen.append(done)
        mm.interrupt_current_processing(True)

    with pytest.raises(mm.InterruptProcessingException):
        host.collect_saliency(model, clip, build_prompt_plan("dog", "object", 2), CollectionSettings(**TINY), progress)
    mm.interrupt_current_processing(False)
    assert seen == [1], "collection went on after the interrupt"
    assert no_hooks_left(model)
    assert torch.equal(before, sample(model, clip, seed=9))


# --- memory -------------------------------------------------------------------------------------


def test_patch_memory_scales_with_what_is_pruned(comfy, fia_pack, sd15, capsys):
    host = pack_module(comfy)
    CollectionSettings = pack_module(comfy, "fia_engine.diffusers_runner").CollectionSettings
    build_prompt_plan = pack_module(comfy, "fia_engine.prompts").build_prompt_plan

    model, clip, _ = sd15
    saliency = host.collect_saliency(
        model, clip, build_prompt_plan("dog\ncat", "object", 2), CollectionSettings(**TINY)
    )
    mask = _fuse(comfy, saliency)
    patched = host.apply_mask(model, mask, 1.0)
    extra = sum(p[1].nbytes for key, patches in patched.patches.items() for p in patches)
    dense = sum(mask.shapes[n][0] * mask.shapes[n][1] for n in mask.shapes) * 4  # a ("diff", -W*M) patch in fp32
    with capsys.disabled():
        print(
            f"\nFIA Apply Mask on SD 1.5: {mask.pruned_count} weights pruned ({100 * mask.pruned_fraction:.3f} %); "
            f"patch bytes {extra} vs dense diff patch {dense} ({100 * extra / dense:.3f} %)"
        )
    assert extra == mask.pruned_count * 4  # int32 indices, nothing else
    assert extra < 0.05 * dense


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("concepts", ["", "  \n \n"])
def test_empty_concepts_error(comfy, fia_pack, sd15_ckpt, concepts):
    with pytest.raises(PromptExecutionError, match="concept list is empty"):
        comfy.run_prompt(fia_graph(sd15_ckpt, concepts=concepts))


def test_strength_out_of_range(comfy, fia_pack, sd15_ckpt, sd15):
    graph = fia_graph(sd15_ckpt, strength=1.5)
    del graph["12"], graph["13"]  # ComfyUI refuses a prompt only when no valid output is left
    with pytest.raises(PromptValidationError, match="Value 1.5 bigger than max of 1.0: strength"):
        comfy.run_prompt(graph)
    host = pack_module(comfy)
    InvalidInputError = pack_module(comfy, "fia_engine").InvalidInputError
    FIAMask = pack_module(comfy, "fia_engine.masks").FIAMask

    empty = FIAMask(indices={}, shapes={}, family="SD1.x", fingerprint="x")
    with pytest.raises(InvalidInputError, match="strength must be between 0 and 1"):
        host.apply_mask(sd15[0], empty, -0.1)


def test_unsupported_model_is_refused(comfy, fia_pack):
    from comfy import ops as comfy_ops  # not `import comfy.ops`: that would rebind the fixture's name
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

    host = pack_module(comfy)
    UnsupportedArchitectureError = pack_module(comfy, "fia_engine").UnsupportedArchitectureError

    class FakePatcher:  # what a ModelPatcher exposes to the host: .model.diffusion_model
        class model:
            diffusion_model = MMDiT(
                input_size=8,
                patch_size=2,
                in_channels=4,
                depth=1,
                num_patches=64,
                adm_in_channels=8,
                context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 8, "out_features": 64}},
                operations=comfy_ops.disable_weight_init,
            )

    with pytest.raises(UnsupportedArchitectureError, match="MMDiT"):
        host.model_targets(FakePatcher())


def test_mask_saved_in_one_graph_loads_in_another(comfy, fia_pack, sd15_ckpt, tmp_path):
    import folder_paths

    folder_paths.add_model_folder_path("fia_masks", str(tmp_path), is_default=True)
    graph = fia_graph(sd15_ckpt, seed=31)
    graph["20"] = {"class_type": "FIASaveMask", "inputs": {"mask": ["4", 0], "name": "dogcat", "overwrite": False}}
    saved = comfy.run_prompt(graph)
    assert (tmp_path / "dogcat.safetensors").is_file()
    assert saved.ui["20"]["fia_summary"][0]["saved_as"] == "dogcat.safetensors"
    second = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": sd15_ckpt}},
        "2": {"class_type": "FIALoadMask", "inputs": {"mask_name": "dogcat.safetensors"}},
        "3": {"class_type": "FIAApplyMask", "inputs": {"model": ["1", 0], "mask": ["2", 0], "strength": 1.0}},
        "4": {"class_type": "FIAMaskReport", "inputs": {"mask": ["2", 0]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }
    loaded = comfy.run_prompt(second).outputs["2"][0]
    original = saved.outputs["4"][0]
    assert loaded.metadata["concepts"] == ["dog", "cat"]
    assert all(torch.equal(loaded.indices[k].cpu(), original.indices[k].cpu()) for k in original.indices)


def test_mask_for_another_architecture_is_refused(comfy, fia_pack, sd15_ckpt, tmp_path):
    import folder_paths

    from fia_engine import find_target_layers
    from fia_engine.masks import FIAMask
    from fia_engine.testing import tiny_unet

    targets = find_target_layers(tiny_unet())
    foreign = FIAMask(
        indices={n: torch.tensor([0]) for n in targets.shapes},
        shapes=targets.shapes,
        family=targets.family,
        fingerprint=targets.fingerprint,
    )
    folder_paths.add_model_folder_path("fia_masks", str(tmp_path), is_default=True)
    foreign.save(tmp_path / "tiny.safetensors")
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": sd15_ckpt}},
        "2": {"class_type": "FIALoadMask", "inputs": {"mask_name": "tiny.safetensors"}},
        "3": {"class_type": "FIAApplyMask", "inputs": {"model": ["1", 0], "mask": ["2", 0], "strength": 1.0}},
        **sampling_nodes(model=["3", 0], negative_text="x", steps=1),
    }
    with pytest.raises(PromptExecutionError, match="made for a UNet\\(context=32\\) model, but the model is SD1.x"):
        comfy.run_prompt(graph)
