"""The ScaPre nodes inside a real ComfyUI (in-process, CPU, random SD 1.5 / SD 2.x checkpoints).

Skipped without COMFYUI_PATH (see README.md beside this file). The pack's own copy of the
engine is used (``pack``), so that its classes are the ones the nodes raise and return.
"""

from __future__ import annotations

import importlib
import time

import pytest
import torch
from comfy_host import PromptExecutionError, PromptValidationError

SCAPRE_IDS = ["FIAScaPreErase", "FIAApplyScaPreEdit", "FIASaveScaPreEdit", "FIALoadScaPreEdit"]
CONCEPTS = "golf ball\nchurch"
IMAGENETTE = (
    "tench\nEnglish springer\ncassette player\nchain saw\nchurch\nFrench horn\ngarbage truck\ngas pump\n"
    "golf ball\nparachute"
)
PREFIX = "diffusion_model."


def pack(comfy, name: str):
    package = comfy.node_class("FIAScaPreErase").__module__.rsplit(".nodes", 1)[0]
    return importlib.import_module(f"{package}.{name}")


def sample(model, clip, text: str = "a photo of a golf ball on the grass", seed: int = 3, steps: int = 2):
    import nodes

    positive = nodes.CLIPTextEncode().encode(clip, text)[0]
    negative = nodes.CLIPTextEncode().encode(clip, "")[0]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return nodes.common_ksampler(model, seed, steps, 7.0, "euler", "normal", positive, negative, latent)[0]["samples"]


def weight_keys(comfy, model) -> dict[str, str]:
    """state-dict key of every to_k / to_v weight -> its canonical name."""
    targets = pack(comfy, "nodes.host").scapre_targets(model)
    return {PREFIX + target.module_path + ".weight": target.canonical for target in targets}


def loaded_state(model, keys=None) -> dict[str, torch.Tensor]:
    """The weights the network holds once ComfyUI has loaded ``model`` (its patches applied).

    Copies of ``keys``; without ``keys`` the live tensors of every entry, valid until another
    clone is loaded (a full copy of SD 1.5 in float32 is 4 GB, so only one is made per test).
    """
    import comfy.model_management as mm

    mm.load_models_gpu([model], force_full_load=True)
    state = model.model.state_dict()
    if keys is None:
        return state
    return {key: state[key].detach().clone() for key in keys}


def erase_graph(ckpt: str, concepts: str = CONCEPTS, scale: float = 1.0, **over) -> dict:
    """Checkpoint -> ScaPre Erase -> a 1-step sample of the edited model."""
    inputs = {
        "concepts": concepts,
        "anchor": "",
        "mode": "scapre",
        "scale": scale,
        "row_mask": True,
        "mask_power": 2.0,
        "spectral": True,
        "spectral_rho": 1.0,
        "bures": True,
        "bures_eta": 0.1,
        "bures_form": "exact",
        "spectral_form": "cap",
        "entropy_blend": True,
        "blend_floor": 0.8,
        "preserve": "",
        **over,
    }
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "FIAScaPreErase", "inputs": {"model": ["1", 0], "clip": ["1", 1], **inputs}},
        **sampling(["2", 0]),
    }


def sampling(model: list) -> dict:
    """Nodes 6 to 11: a 64 px, 1-step sample of ``model`` into a preview (an output node)."""
    return {
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a golf ball"}},
        "8": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "9": {
            "class_type": "KSampler",
            "inputs": {
                "model": model,
                "positive": ["6", 0],
                "negative": ["6", 0],
                "latent_image": ["8", 0],
                "seed": 1,
                "steps": 1,
                "cfg": 1.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}},
    }


# --- loading and schema ---------------------------------------------------------------------


def test_scapre_nodes_load_with_description_and_tooltips(comfy, fia_pack):
    ScaPreSettings = pack(comfy, "fia_engine.scapre").ScaPreSettings

    assert set(SCAPRE_IDS) <= set(fia_pack)
    for node_id in SCAPRE_IDS:
        schema = comfy.node_class(node_id).define_schema()
        assert schema.category == "FIA unlearning" and schema.description, node_id
        for socket in list(schema.inputs) + list(schema.outputs):
            assert socket.tooltip, f"{node_id}.{getattr(socket, 'id', socket)} has no tooltip"
    erase = comfy.node_class("FIAScaPreErase")
    assert tuple(erase.RETURN_TYPES) == ("MODEL", "FIA_SCAPRE_EDIT")
    spec = {name: entry for section in erase.INPUT_TYPES().values() for name, entry in section.items()}
    engine = ScaPreSettings()
    names = ("mode", "row_mask", "mask_power", "spectral", "spectral_rho", "spectral_form", "bures", "bures_eta")
    for name in (*names, "bures_form"):
        assert spec[name][1]["default"] == getattr(engine, name), name
    assert spec["entropy_blend"][1]["default"] == engine.entropy_blend
    assert spec["blend_floor"][1]["default"] == engine.blend_floor
    assert spec["scale"][1]["max"] == pack(comfy, "fia_engine.scapre.edit").MAX_SCALE
    assert "preserve" in erase.INPUT_TYPES()["optional"]


# --- prompts: what the UNet sees --------------------------------------------------------------


def test_prompts_are_encoded_as_clip_text_encode_does(comfy, fia_pack, sd15):
    import nodes

    host = pack(comfy, "nodes.host")
    _, clip, _ = sd15
    for text, length in (("golf ball", 4), ("", 2), ("English springer", 4), ("a photo of a tench in a lake", 11)):
        cond, found = host.encode_prompt(clip, text)
        assert found == length, text
        conditioning = nodes.CLIPTextEncode().encode(clip, text)[0]
        assert torch.equal(cond, conditioning[0][0][0].float()), text  # the UNet's cross-attention context
        assert cond.shape == (77, 768)
    with pytest.raises(pack(comfy, "fia_engine").InvalidInputError, match="shorten it to at most 75 tokens"):
        host.encode_prompt(clip, "golf " * 80)


def test_sd2_and_sdxl_tokenizers_give_the_same_lengths(comfy, fia_pack):
    """SD 2.x pads with 0 and SDXL has two tokenizers (l pads with the end token, g with 0): same lengths."""
    from comfy import sd1_clip, sdxl_clip  # not `import comfy.x`: that would rebind the fixture's name
    from comfy.text_encoders import sd2_clip

    host = pack(comfy, "nodes.host")
    for text, length in (("golf ball", 4), ("", 2), ("(church:1.2)", 3), ("a photo of a tench in a lake", 11)):
        for tokenizer in (sd1_clip.SD1Tokenizer(), sd2_clip.SD2Tokenizer(), sdxl_clip.SDXLTokenizer()):
            tokens = tokenizer.tokenize_with_weights(text, True)
            assert host.prompt_length(tokens, text) == length, (type(tokenizer).__name__, text)


# --- the patched model ----------------------------------------------------------------------------


def test_patched_to_k_to_v_differ_by_exactly_scale_times_delta(comfy, fia_pack, sd15):
    host = pack(comfy, "nodes.host")
    model, clip, _ = sd15
    scale = 0.7
    patched, edit = host.erase_with_scapre(model, clip, CONCEPTS, "", "", None, scale)
    keys = weight_keys(comfy, model)
    assert len(keys) == 32 and set(patched.patches) == set(keys) and not model.patches
    assert {name for name in keys.values()} == set(edit.layers)

    original = {key: value.detach().clone() for key, value in loaded_state(model).items()}
    edited = loaded_state(patched)
    assert original.keys() == edited.keys()
    for key, weight in original.items():
        if key in keys:
            expected = (weight.float() + scale * edit.delta(keys[key])).to(weight.dtype)
            assert torch.equal(edited[key], expected), key
            assert not torch.equal(edited[key], weight), f"{key} did not change"
        else:
            assert torch.equal(edited[key], weight), f"{key} changed although ScaPre does not edit it"
    restored = loaded_state(model, keys)
    assert all(torch.equal(restored[key], original[key]) for key in keys), "loading the input MODEL again"


def test_input_model_samples_bit_identically(comfy, fia_pack, sd15):
    host = pack(comfy, "nodes.host")
    model, clip, _ = sd15
    before = sample(model, clip)
    patched, _ = host.erase_with_scapre(model, clip, CONCEPTS, "", "", None, 1.0)
    after = sample(patched, clip)
    assert not torch.equal(before, after), "the edit changed nothing"
    assert torch.equal(before, sample(model, clip)), "the input model changed"
    assert not model.patches


def test_weights_are_read_as_this_model_computes_with_them(comfy, fia_pack, sd15):
    """Original weights even while another clone's patches sit in the shared modules; plus this MODEL's own patches."""
    host = pack(comfy, "nodes.host")
    model, clip, _ = sd15
    targets = host.scapre_targets(model)
    plain = {name: w.float().clone() for name, w in host.model_weights(model, targets).items()}

    other, _ = host.erase_with_scapre(model, clip, "tench", "", "", None, 2.0)
    key = PREFIX + targets.targets[0].module_path + ".weight"
    assert not torch.equal(loaded_state(other, [key])[key].float(), plain[targets.targets[0].canonical])
    # the modules now hold the other clone's edited weights
    now = host.model_weights(model, targets)
    assert all(torch.equal(now[name].float(), plain[name]) for name in plain)

    first = targets.targets[0]
    diff = 0.01 * torch.randn(first.shape, generator=torch.Generator().manual_seed(0))
    lora_like = model.clone()
    lora_like.add_patches({PREFIX + first.module_path + ".weight": (diff,)}, 0.5)
    seen = host.model_weights(lora_like, targets)
    assert torch.equal(seen[first.canonical], plain[first.canonical] + 0.5 * diff)
    assert all(torch.equal(seen[name].float(), plain[name]) for name in plain if name != first.canonical)
    loaded_state(model, [])


# --- files ------------------------------------------------------------------------------------


def test_save_load_apply_gives_the_same_patched_weights(comfy, fia_pack, sd15_ckpt, tmp_path):
    import folder_paths

    folder_paths.add_model_folder_path("fia_masks", str(tmp_path), is_default=True)
    first = erase_graph(sd15_ckpt, scale=0.8, anchor="a photo")
    first["20"] = {"class_type": "FIASaveScaPreEdit", "inputs": {"edit": ["2", 1], "name": "golf_church"}}
    first["20"]["inputs"]["overwrite"] = False
    made = comfy.run_prompt(first)
    assert (tmp_path / "golf_church.safetensors").is_file()
    saved_ui = made.ui["20"]["fia_summary"][0]
    assert saved_ui["saved_as"] == "golf_church.safetensors" and saved_ui["anchor"] == "a photo"
    patched_here, edit = made.outputs["2"]

    second = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": sd15_ckpt}},
        "2": {"class_type": "FIALoadScaPreEdit", "inputs": {"edit_name": "golf_church.safetensors"}},
        "3": {"class_type": "FIAApplyScaPreEdit", "inputs": {"model": ["1", 0], "edit": ["2", 0], "scale": 0.8}},
        **sampling(["3", 0]),
    }
    used = comfy.run_prompt(second)
    loaded = used.outputs["2"][0]
    patched_there = used.outputs["3"][0]
    assert loaded.metadata["concepts"] == ["golf ball", "church"] and loaded.metadata["anchor"] == "a photo"
    assert loaded.layers.keys() == edit.layers.keys()
    for name, delta in edit.layers.items():
        assert all(torch.equal(a, b) for a, b in zip(delta.tensors(), loaded.layers[name].tensors(), strict=True))
    keys = weight_keys(comfy, patched_here)
    here, there = loaded_state(patched_here, keys), loaded_state(patched_there, keys)
    assert all(torch.equal(here[key], there[key]) for key in keys)
    assert used.ui["3"]["fia_summary"][0]["scale"] == 0.8


def test_edit_bytes_are_far_below_a_dense_patch(comfy, fia_pack, sd15, tmp_path, capsys):
    host = pack(comfy, "nodes.host")
    model, clip, _ = sd15
    started = time.perf_counter()
    patched, edit = host.erase_with_scapre(model, clip, IMAGENETTE, "", "", None, 1.0)
    seconds = time.perf_counter() - started
    patch_bytes = sum(p[1].nbytes for patches in patched.patches.values() for p in patches)
    file_bytes = edit.save(tmp_path / "imagenette.safetensors").stat().st_size
    ranks = sorted({delta.rank for delta in edit.layers.values()})
    rows = edit.metadata["token_rows"]["concept"]
    with capsys.disabled():
        print(
            f"\nScaPre Erase on SD 1.5, 10 Imagenette concepts ({rows} token rows), {len(edit.layers)} projections "
            f"in {seconds:.1f} s: ranks {ranks}; patch {patch_bytes:,} B, file {file_bytes:,} B, "
            f"dense {edit.dense_bytes:,} B ({100 * patch_bytes / edit.dense_bytes:.2f} % of dense)"
        )
    assert patch_bytes == edit.stored_bytes  # the factors, nothing else
    assert all(delta.is_low_rank for delta in edit.layers.values())
    assert edit.stored_bytes < 0.2 * edit.dense_bytes
    assert file_bytes < edit.stored_bytes + 200_000  # header and metadata


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("concepts", ["", "  \n \n"])
def test_empty_concepts_error(comfy, fia_pack, sd15_ckpt, concepts):
    with pytest.raises(PromptExecutionError, match="concept list is empty"):
        comfy.run_prompt(erase_graph(sd15_ckpt, concepts=concepts))


def test_scale_out_of_range(comfy, fia_pack, sd15_ckpt, sd15):
    with pytest.raises(PromptValidationError, match="Value 10.5 bigger than max of 10.0: scale"):
        comfy.run_prompt(erase_graph(sd15_ckpt, scale=10.5))
    host = pack(comfy, "nodes.host")
    InvalidInputError = pack(comfy, "fia_engine").InvalidInputError
    model, clip, _ = sd15
    with pytest.raises(InvalidInputError, match="scale must be between 0 and 10"):
        host.erase_with_scapre(model, clip, CONCEPTS, "", "", None, -0.1)
    _, edit = host.erase_with_scapre(model, clip, "dog", "", "", None, 0.0)
    with pytest.raises(InvalidInputError, match="scale must be between 0 and 10"):
        host.apply_scapre_edit(model, edit, 11)
    assert not model.patches


def test_prompt_mistakes_are_explained(comfy, fia_pack, sd15):
    host = pack(comfy, "nodes.host")
    InvalidInputError = pack(comfy, "fia_engine").InvalidInputError
    model, clip, _ = sd15
    with pytest.raises(InvalidInputError, match="listed both to erase and to preserve"):
        host.erase_with_scapre(model, clip, CONCEPTS, "", "church", None, 1.0)
    with pytest.raises(InvalidInputError, match="the anchor 'church' is one of the concepts"):
        host.erase_with_scapre(model, clip, CONCEPTS, "church", "", None, 1.0)
    with pytest.raises(InvalidInputError, match="listed twice"):
        host.erase_with_scapre(model, clip, "church\nChurch", "", "", None, 1.0)
    with pytest.raises(InvalidInputError, match="ScaPre setting mask_power"):
        settings = pack(comfy, "fia_engine.scapre").ScaPreSettings(mask_power=0.0)
        host.erase_with_scapre(model, clip, CONCEPTS, "", "", settings, 1.0)
    assert not model.patches


def test_unsupported_model_is_refused(comfy, fia_pack, sd15):
    from comfy import ops as comfy_ops  # not `import comfy.ops`: that would rebind the fixture's name
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

    host = pack(comfy, "nodes.host")
    UnsupportedArchitectureError = pack(comfy, "fia_engine").UnsupportedArchitectureError

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

    with pytest.raises(UnsupportedArchitectureError, match="ScaPre edits the cross-attention.*MMDiT"):
        host.erase_with_scapre(FakePatcher(), sd15[1], CONCEPTS, "", "", None, 1.0)


def test_edit_for_another_architecture_is_refused(comfy, fia_pack, sd15_ckpt, tmp_path):
    import folder_paths

    from fia_engine.scapre import compute_edit, find_cross_attention_projections
    from fia_engine.testing import tiny_unet

    targets = find_cross_attention_projections(tiny_unet())  # a diffusers UNet with 32-wide text embeddings
    rows = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    foreign = compute_edit(targets.weights(), rows, torch.zeros(3, 32), None, metadata={"family": targets.family})
    folder_paths.add_model_folder_path("fia_masks", str(tmp_path), is_default=True)
    foreign.save(tmp_path / "tiny_edit.safetensors")
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": sd15_ckpt}},
        "2": {"class_type": "FIALoadScaPreEdit", "inputs": {"edit_name": "tiny_edit.safetensors"}},
        "3": {"class_type": "FIAApplyScaPreEdit", "inputs": {"model": ["1", 0], "edit": ["2", 0], "scale": 1.0}},
        **sampling(["3", 0]),
    }
    with pytest.raises(PromptExecutionError, match="made for a UNet\\(context=32\\) model, but the model is SD1.x"):
        comfy.run_prompt(graph)


# --- SD 2.x -------------------------------------------------------------------------------------


def test_sd2_erase_and_a_mismatched_clip(comfy, fia_pack, random_ckpt, sd15):
    import folder_paths
    from comfy import sd as comfy_sd  # keeps the `comfy` fixture name unshadowed

    host = pack(comfy, "nodes.host")
    engine = pack(comfy, "fia_engine")
    path = folder_paths.get_full_path_or_raise("checkpoints", random_ckpt("sd2-v"))
    model, clip, _, _ = comfy_sd.load_checkpoint_guess_config(path, output_vae=False, output_clip=True)
    cond, length = host.encode_prompt(clip, "golf ball")
    assert cond.shape == (77, 1024) and length == 4
    before = sample(model, clip)
    patched, edit = host.erase_with_scapre(model, clip, CONCEPTS, "", "", None, 1.0)
    assert edit.family == "SD2.x" and len(edit.layers) == 32 and edit.stored_bytes < edit.dense_bytes / 10
    assert not torch.equal(before, sample(patched, clip))
    assert torch.equal(before, sample(model, clip)) and not model.patches

    sd15_model, sd15_clip, _ = sd15
    with pytest.raises(engine.InvalidInputError, match="CLIP gives 1024-wide token embeddings .* takes 768"):
        host.erase_with_scapre(sd15_model, clip, CONCEPTS, "", "", None, 1.0)
    with pytest.raises(engine.MaskMismatchError, match="made for a SD2.x model, but the model is SD1.x"):
        host.apply_scapre_edit(sd15_model, edit, 1.0)
    assert not sd15_model.patches


# --- SDXL: the text side ----------------------------------------------------------------------------


def test_sdxl_clip_gives_the_2048_wide_context(comfy, fia_pack, sd15):
    """SDXL's two encoders, concatenated to 2048, through the host's encoder (random CLIP-L + CLIP-G only).

    A full random SDXL checkpoint needs ~19 GB of RAM to make and load, so the UNet side is not
    run here; its to_k / to_v are found by the same walker FIA's SDXL test covers.
    """
    import comfy_checkpoints
    from comfy import sd as comfy_sd  # keeps the `comfy` fixture name unshadowed
    from comfy import supported_models

    import nodes

    host = pack(comfy, "nodes.host")
    engine = pack(comfy, "fia_engine")
    target = supported_models.SDXL(comfy_checkpoints.UNET_CONFIGS["sdxl"]).clip_target()
    torch.manual_seed(0)
    clip = comfy_sd.CLIP(target=target, model_options={"dtype": torch.float32})
    comfy_checkpoints.randomize_(clip.cond_stage_model)
    cond, length = host.encode_prompt(clip, "golf ball")
    assert cond.shape == (77, 2048) and length == 4 and bool(torch.isfinite(cond).all())
    conditioning = nodes.CLIPTextEncode().encode(clip, "golf ball")[0]
    assert torch.equal(cond, conditioning[0][0][0].float())  # the UNet's cross-attention context
    with pytest.raises(engine.InvalidInputError, match="CLIP gives 2048-wide token embeddings .* takes 768"):
        host.erase_with_scapre(sd15[0], clip, CONCEPTS, "", "", None, 1.0)
