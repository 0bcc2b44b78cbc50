"""SD 2.x and SDXL inside ComfyUI (random full-size checkpoints, tiny resolution) and the low-VRAM rule."""

from __future__ import annotations

import importlib

import pytest
import torch


def pack(comfy, name: str):
    package = comfy.node_class("FIAApplyMask").__module__.rsplit(".nodes", 1)[0]
    return importlib.import_module(f"{package}.{name}")


def test_sdxl_collect_localize_fuse_apply(comfy, fia_pack, random_ckpt):
    import folder_paths
    from comfy import sd as comfy_sd  # keeps the `comfy` fixture name unshadowed

    import nodes

    host = pack(comfy, "nodes.host")
    engine = pack(comfy, "fia_engine")
    settings = pack(comfy, "fia_engine.diffusers_runner").CollectionSettings(
        pairs=1, steps=10, saliency_steps=1, resolution=64, cfg=5.0
    )
    plan = pack(comfy, "fia_engine.prompts").build_prompt_plan("church", "object", 1)
    path = folder_paths.get_full_path_or_raise("checkpoints", random_ckpt("sdxl"))
    model, clip, _, _ = comfy_sd.load_checkpoint_guess_config(path, output_vae=False, output_clip=True)
    targets = host.model_targets(model)
    assert targets.family == "SDXL" and len(targets) == 70
    saliency = host.collect_saliency(model, clip, plan, settings)
    mask = engine.fuse(engine.localize_concepts(saliency, 0.05, 0.01), 0.6)
    assert 0 < mask.pruned_count and len(mask.indices) == 70
    patched = host.apply_mask(model, mask, 1.0)
    positive = nodes.CLIPTextEncode().encode(clip, "a church")[0]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    before = nodes.common_ksampler(model, 1, 1, 5.0, "euler", "normal", positive, positive, latent)[0]["samples"]
    after = nodes.common_ksampler(patched, 1, 1, 5.0, "euler", "normal", positive, positive, latent)[0]["samples"]
    again = nodes.common_ksampler(model, 1, 1, 5.0, "euler", "normal", positive, positive, latent)[0]["samples"]
    assert not torch.equal(before, after) and torch.equal(before, again)


def test_lowvram_with_patched_ffn_is_refused(comfy, fia_pack, sd15_ckpt):
    """In low-VRAM mode ComfyUI computes patched weights per call (the module keeps the
    unpatched one); with patches on FFN2 the collector would measure the wrong |W|."""
    import folder_paths
    from comfy import sd as comfy_sd  # keeps the `comfy` fixture name unshadowed

    host = pack(comfy, "nodes.host")
    engine = pack(comfy, "fia_engine")
    runner = pack(comfy, "fia_engine.diffusers_runner")
    plan = pack(comfy, "fia_engine.prompts").build_prompt_plan("dog", "object", 1)
    path = folder_paths.get_full_path_or_raise("checkpoints", sd15_ckpt)
    model, clip, _, _ = comfy_sd.load_checkpoint_guess_config(path, output_vae=False, output_clip=True)
    targets = host.model_targets(model)
    lora_like = model.clone()
    key = "diffusion_model." + targets.layers[0].module_path + ".weight"
    lora_like.add_patches({key: (torch.zeros(targets.layers[0].shape),)}, 0.5)
    module = targets.layers[0].module
    module.comfy_cast_weights = True  # what ModelPatcher sets on modules it streams in low-VRAM mode
    try:
        with pytest.raises(engine.InvalidInputError, match="low-VRAM mode with patches"):
            host.collect_saliency(
                lora_like, clip, plan, runner.CollectionSettings(pairs=1, saliency_steps=1, resolution=64)
            )
    finally:
        del module.comfy_cast_weights  # back to the class default
    assert all(not m._forward_hooks for m in model.model.diffusion_model.modules())


def test_sd2_collect_localize_fuse_apply(comfy, fia_pack, random_ckpt):
    import folder_paths
    from comfy import sd as comfy_sd  # keeps the `comfy` fixture name unshadowed

    import nodes

    host = pack(comfy, "nodes.host")
    engine = pack(comfy, "fia_engine")
    settings = pack(comfy, "fia_engine.diffusers_runner").CollectionSettings(
        pairs=2, steps=10, saliency_steps=2, resolution=64
    )
    plan = pack(comfy, "fia_engine.prompts").build_prompt_plan("church\ngolf ball", "object", 2)
    path = folder_paths.get_full_path_or_raise("checkpoints", random_ckpt("sd2-v"))
    model, clip, _, _ = comfy_sd.load_checkpoint_guess_config(path, output_vae=False, output_clip=True)
    targets = host.model_targets(model)
    assert targets.family == "SD2.x" and len(targets) == 16
    mask = engine.fuse(engine.localize_concepts(host.collect_saliency(model, clip, plan, settings), 0.05, 0.01), 0.6)
    assert 0 < mask.pruned_count and mask.family == "SD2.x"
    positive = nodes.CLIPTextEncode().encode(clip, "a church")[0]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    before = nodes.common_ksampler(model, 1, 1, 7.0, "euler", "normal", positive, positive, latent)[0]["samples"]
    after = nodes.common_ksampler(
        host.apply_mask(model, mask, 1.0), 1, 1, 7.0, "euler", "normal", positive, positive, latent
    )[0]["samples"]
    again = nodes.common_ksampler(model, 1, 1, 7.0, "euler", "normal", positive, positive, latent)[0]["samples"]
    assert not torch.equal(before, after) and torch.equal(before, again)
