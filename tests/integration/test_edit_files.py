"""Edits as standard files, read by ComfyUI's stock nodes (in-process, CPU, the random SD 1.5 checkpoint).

- a ScaPre edit saved by FIASaveScaPreLoRA and loaded by the stock LoraLoaderModelOnly gives
  the weights and samples of FIA Apply ScaPre Edit;
- a checkpoint from ``python -m fia_engine bake`` loads in the stock CheckpointLoaderSimple
  and samples as the MODEL patched by FIA Apply Mask;
- the stock CheckpointSave writes a MODEL patched by FIA Apply Mask as a correct baked file.

Skipped without COMFYUI_PATH (see README.md beside this file). The mask is random (1 % of
each FFN2 layer): what is checked is how it travels, not what it erases.
"""

from __future__ import annotations

import json

import torch
from safetensors import safe_open
from test_scapre_nodes import PREFIX, erase_graph, loaded_state, pack, sample, weight_keys

LDM = "model."  # single-file keys are the ModelPatcher's keys with this in front


def random_mask(comfy, model, fraction: float = 0.01, seed: int = 0):
    host = pack(comfy, "nodes.host")
    FIAMask = pack(comfy, "fia_engine.masks").FIAMask
    targets = host.model_targets(model)
    generator = torch.Generator().manual_seed(seed)
    indices = {
        layer.canonical: torch.randperm(layer.numel, generator=generator)[: int(fraction * layer.numel)].sort().values
        for layer in targets
    }
    signature = host.original_signature(model, targets)
    metadata = {"concepts": ["random"], "note": "1 % of each layer at random, for tests"}
    return FIAMask(indices, targets.shapes, targets.family, targets.fingerprint, signature, metadata)


def ffn2_keys(comfy, model) -> dict[str, str]:
    """ModelPatcher key of every FFN2 weight -> its canonical name."""
    return {
        PREFIX + layer.module_path + ".weight": layer.canonical
        for layer in pack(comfy, "nodes.host").model_targets(model)
    }


def test_scapre_lora_in_stock_lora_loader_equals_apply_scapre_edit(comfy, fia_pack, sd15_ckpt, sd15, tmp_path, capsys):
    import folder_paths

    import nodes

    folder_paths.add_model_folder_path("loras", str(tmp_path), is_default=True)
    graph = erase_graph(sd15_ckpt, scale=1.0)
    graph["20"] = {
        "class_type": "FIASaveScaPreLoRA",
        "inputs": {"edit": ["2", 1], "name": "golf_church_lora", "overwrite": False, "format": "comfy"},
    }
    made = comfy.run_prompt(graph)
    assert (tmp_path / "golf_church_lora.safetensors").is_file()
    assert made.ui["20"]["fia_summary"][0]["saved_as"] == "golf_church_lora.safetensors"
    _, edit = made.outputs["2"]

    host = pack(comfy, "nodes.host")
    model, clip, _ = sd15
    (with_lora,) = nodes.LoraLoaderModelOnly().load_lora_model_only(model, "golf_church_lora.safetensors", 1.0)
    with_fia = host.apply_scapre_edit(model, edit, 1.0)
    keys = weight_keys(comfy, model)
    assert set(with_lora.patches) == set(keys), "the LoRA must patch exactly the 32 to_k / to_v weights"
    from_lora, from_fia, original = (loaded_state(m, keys) for m in (with_lora, with_fia, model))
    diff = max(float((from_lora[key] - from_fia[key]).abs().max()) for key in keys)
    change = max(float((from_fia[key] - original[key]).abs().max()) for key in keys)
    lora_sample, fia_sample = sample(with_lora, clip), sample(with_fia, clip)
    with capsys.disabled():
        print(
            f"\nLoRA (LoraLoaderModelOnly) vs FIA Apply ScaPre Edit on SD 1.5: max |dW| {diff:.3g} over "
            f"{len(keys)} weights (the edit changes them by up to {change:.3g}); "
            f"sample max |d| {float((lora_sample - fia_sample).abs().max()):.3g}"
        )
    assert change > 0 and diff <= 1e-6 * change
    assert torch.equal(lora_sample, fia_sample)
    assert not torch.equal(lora_sample, sample(model, clip)), "the LoRA changed nothing"


def test_baked_checkpoint_in_stock_loader_samples_as_apply_mask(comfy, fia_pack, sd15_ckpt, sd15, tmp_path):
    import folder_paths

    import nodes

    host = pack(comfy, "nodes.host")
    cli = pack(comfy, "fia_engine.cli")
    model, clip, _ = sd15
    mask = random_mask(comfy, model)
    mask_path = mask.save(tmp_path / "random_mask.safetensors")
    source = folder_paths.get_full_path_or_raise("checkpoints", sd15_ckpt)
    baked_dir = tmp_path / "checkpoints"
    args = ["bake", "--checkpoint", source, "--mask", str(mask_path), "--out", str(baked_dir / "baked.safetensors")]
    assert cli.main(args) == 0
    comfy.add_model_folder("checkpoints", baked_dir)
    baked_model, baked_clip, _ = nodes.CheckpointLoaderSimple().load_checkpoint("baked.safetensors")[:3]

    patched = host.apply_mask(model, mask, 1.0)
    keys = ffn2_keys(comfy, model)
    from_bake, from_patch = loaded_state(baked_model, keys), loaded_state(patched, keys)
    for key, canonical in keys.items():
        assert torch.equal(from_bake[key], from_patch[key]), key
        assert bool((from_bake[key].view(-1)[mask.indices[canonical]] == 0).all()), key
    assert torch.equal(sample(baked_model, baked_clip), sample(patched, clip))
    with safe_open(str(baked_dir / "baked.safetensors"), framework="pt") as handle:
        (record,) = json.loads(handle.metadata()["fia_bake"])
    assert record["kind"] == "fia-mask" and record["mask"]["concepts"] == ["random"]


def test_stock_checkpoint_save_writes_the_masked_model(comfy, fia_pack, sd15_ckpt, sd15, tmp_path):
    import folder_paths

    folder_paths.add_model_folder_path("fia_masks", str(tmp_path), is_default=True)  # FIA Load Mask lists it
    source = folder_paths.get_full_path_or_raise("checkpoints", sd15_ckpt)
    model = sd15[0]  # the same checkpoint: the mask needs its layer shapes and weights
    mask = random_mask(comfy, model, seed=1)
    mask.save(tmp_path / "random_mask.safetensors")
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": sd15_ckpt}},
        "2": {"class_type": "FIALoadMask", "inputs": {"mask_name": "random_mask.safetensors"}},
        "3": {"class_type": "FIAApplyMask", "inputs": {"model": ["1", 0], "mask": ["2", 0], "strength": 1.0}},
        "4": {
            "class_type": "CheckpointSave",
            "inputs": {"model": ["3", 0], "clip": ["1", 1], "vae": ["1", 2], "filename_prefix": "fia_baked"},
        },
    }
    comfy.run_prompt(graph)
    (saved,) = (comfy.base_directory / "output").glob("fia_baked*.safetensors")
    keys = {LDM + key: name for key, name in ffn2_keys(comfy, model).items()}
    with safe_open(source, framework="pt") as original_file, safe_open(str(saved), framework="pt") as saved_file:
        unet = [k for k in original_file.keys() if k.startswith(LDM + PREFIX)]
        assert set(unet) <= set(saved_file.keys())
        for key in unet:
            original, written = original_file.get_tensor(key), saved_file.get_tensor(key)
            if key not in keys:
                assert torch.equal(written, original.to(written.dtype)), key
                continue
            index = mask.indices[keys[key]]
            flat, before = written.view(-1), original.to(written.dtype).view(-1)
            assert bool((flat[index] == 0).all()), key
            keep = torch.ones_like(flat, dtype=torch.bool)
            keep[index] = False
            assert torch.equal(flat[keep], before[keep]), key
    saved.unlink()  # 4 GB of float32


def test_bake_refuses_a_mask_for_another_architecture(comfy, fia_pack, sd15, random_ckpt, tmp_path, capsys):
    """An SD 1.5 mask and an SD 2.x checkpoint (same FFN2 shapes, another context width) do not bake."""
    import folder_paths

    cli = pack(comfy, "fia_engine.cli")
    mask_path = random_mask(comfy, sd15[0]).save(tmp_path / "sd15_mask.safetensors")
    other = folder_paths.get_full_path_or_raise("checkpoints", random_ckpt("sd2-eps"))
    out = tmp_path / "never.safetensors"
    assert cli.main(["bake", "--checkpoint", other, "--mask", str(mask_path), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: this mask was made for a SD1.x model, but the model is SD2.x"), error
    assert len(error.splitlines()) == 1 and not out.exists()
    assert {p.name for p in tmp_path.iterdir()} == {"sd15_mask.safetensors"}
