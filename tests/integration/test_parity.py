"""Parity: the same checkpoint unlearned through the nodes and through the diffusers path.

What had to be aligned so that both see the same activations:
- the trajectory: ComfyUI's "euler" sampler on the "normal" schedule <-> diffusers'
  EulerDiscreteScheduler with linearly spaced timesteps (`sampler="euler"`), both starting
  from noise * sqrt(1 + sigma_max^2);
- the noise: both draw sample k's noise from `initial_noise(shape, seed, k)`;
- the prompts: one PromptPlan; the same CLIP weights and tokenizer (ComfyUI's own SD1
  vocabulary loaded as a transformers CLIPTokenizer), the empty prompt as unconditional;
- resolution, cfg, steps, saliency steps, pairs, r1, r2, alpha.
- the text encoder's precision: ComfyUI encodes text in fp16 on the CPU by default, which
  alone moved the masks of the deepest layers to IoU ~0.87; its `--fp32-text-enc` option
  (set here while the checkpoint loads) makes it fp32 like the diffusers path.
What stays different: ComfyUI interpolates sigmas in log space where diffusers
interpolates linearly, and float sums run in other orders.
"""

from __future__ import annotations

import importlib

import torch

SETTINGS = dict(pairs=4, steps=10, saliency_steps=3, resolution=64, cfg=7.5, seed=4, sampler="euler")


def export_to_diffusers(model, ckpt_path: str, folder) -> None:
    """Write the UNet and CLIP of a ComfyUI SD 1.5 checkpoint as a diffusers folder."""
    import comfy.utils
    from comfy_host import comfyui_path
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    state = load_file(ckpt_path)
    mapping = comfy.utils.unet_to_diffusers(model.model.model_config.unet_config)
    unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64)
    prefix = "model.diffusion_model."
    # the map lists optional keys too (e.g. skip convolutions SD 1.5 does not have); strict loading checks the rest
    unet.load_state_dict({key: state[prefix + ldm].float() for key, ldm in mapping.items() if prefix + ldm in state})
    unet.save_pretrained(folder / "unet")
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
    )
    text = CLIPTextModel(config)
    text_prefix = "cond_stage_model.transformer.text_model."
    text_state = {k[len(text_prefix) :]: v.float() for k, v in state.items() if k.startswith(text_prefix)}
    target = text if "embeddings.token_embedding.weight" in text.state_dict() else text.text_model
    target.load_state_dict(text_state, strict=True)  # strict: a silent partial load would void the comparison
    text.save_pretrained(folder / "text_encoder")
    CLIPTokenizer.from_pretrained(str(comfyui_path() / "comfy" / "sd1_tokenizer")).save_pretrained(folder / "tokenizer")
    # Only the VAE's config is needed: it tells the runner that latents are 8x smaller than pixels.
    AutoencoderKL(block_out_channels=(128, 256, 512, 512)).save_config(folder / "vae")
    EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").save_pretrained(
        folder / "scheduler"
    )


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = set(a.tolist()), set(b.tolist())
    return len(a & b) / max(1, len(a | b))


def test_nodes_and_diffusers_give_the_same_masks(comfy, fia_pack, sd15_ckpt, tmp_path, capsys):
    import folder_paths
    from comfy import sd as comfy_sd  # keeps the `comfy` fixture name unshadowed

    from fia_engine import fuse, localize_concepts
    from fia_engine.diffusers_runner import CollectionSettings, collect_saliency, load_components
    from fia_engine.prompts import build_prompt_plan

    package = comfy.node_class("FIAApplyMask").__module__.rsplit(".nodes", 1)[0]
    host = importlib.import_module(f"{package}.nodes.host")
    path = folder_paths.get_full_path_or_raise("checkpoints", sd15_ckpt)
    from comfy.cli_args import args

    previous, args.fp32_text_enc = args.fp32_text_enc, True  # ComfyUI's --fp32-text-enc, read at load time
    try:
        model, clip, _, _ = comfy_sd.load_checkpoint_guess_config(path, output_vae=False, output_clip=True)
    finally:
        args.fp32_text_enc = previous
    export_to_diffusers(model, path, tmp_path)

    plan = build_prompt_plan(["church", "golf ball"], "object", SETTINGS["pairs"])
    settings = CollectionSettings(**SETTINGS)
    from_nodes = host.collect_saliency(model, clip, plan, settings)
    from_diffusers = collect_saliency(load_components(tmp_path, "cpu"), None, settings, plan=plan)

    masks = [fuse(localize_concepts(s, 0.05, 0.01), 0.6) for s in (from_nodes, from_diffusers)]
    scores = {name: iou(masks[0].indices[name].cpu(), masks[1].indices[name].cpu()) for name in masks[1].indices}
    with capsys.disabled():
        print(
            "\nparity IoU per layer (nodes vs diffusers):",
            " ".join(f"{name}={value:.3f}" for name, value in scores.items()),
            f"\nmin {min(scores.values()):.3f}, mean {sum(scores.values()) / len(scores):.3f}",
        )
    assert min(scores.values()) >= 0.9
