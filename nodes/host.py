"""The one module that talks to ComfyUI's sampler and ModelPatcher; the nodes hold no numerics.

Collection: the saliency trajectory is run step by step (one `sample_custom` call of one
Euler step per row chunk), so every row of a step is seen before the next step starts
(exact mode needs that) and only the saliency steps of the schedule are ever run. An
APPLY_MODEL wrapper on a private clone tells the collector which batch rows are conditional
(ComfyUI puts the unconditional rows first, `cond_or_uncond == [1, 0]`). Hooks sit on the
UNet's nn.Modules, which every clone shares; they are removed in `finally`.

Masking: a `SparsePrunePatch` weight adapter holds only the pruned indices and zeroes them
in ComfyUI's own working copy of the weight, so a patched model costs memory in proportion
to what is pruned, not to the layer size. The input MODEL is never modified.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import comfy.model_management
import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import torch
from comfy.weight_adapter.base import WeightAdapterBase

from ..fia_engine import InvalidInputError, SaliencyCollector, find_target_layers
from ..fia_engine.diffusers_runner import CollectionSettings, initial_noise
from ..fia_engine.layers import UNetTargets
from ..fia_engine.masks import FIAMask, check_strength, prune_in_place_
from ..fia_engine.prompts import PromptPlan
from ..fia_engine.saliency import ConceptSaliency

logger = logging.getLogger(__name__)

WRAPPER_KEY = "fia_saliency"
PREFIX = "diffusion_model."
SAMPLER = "euler"
SCHEDULER = "normal"


def model_targets(model) -> UNetTargets:
    """The FIA target layers of a ComfyUI MODEL; a clear error for anything that is not an SD UNet."""
    unet = getattr(getattr(model, "model", None), "diffusion_model", None)
    if unet is None:
        raise InvalidInputError(f"expected a ComfyUI MODEL (ModelPatcher), got {type(model).__name__}")
    return find_target_layers(unet)


def original_signature(model, targets: UNetTargets) -> dict[str, float]:
    """Mean |W| per layer of the checkpoint's own weights (not another clone's patched copy)."""
    patches = model.get_key_patches(filter_prefix=PREFIX)
    signature = {}
    for layer in targets:
        weight = patches[PREFIX + layer.module_path + ".weight"][0][0]
        signature[layer.canonical] = float(f"{weight.detach().float().abs().mean().item():.6g}")
    return signature


def _refuse_patched_lowvram(model, targets: UNetTargets) -> None:
    """In lowvram mode patched weights are computed per call and the module keeps the unpatched one.

    Saliency would then use |W| of other weights than the forward pass does, so refuse.
    """
    lowvram = any(getattr(layer.module, "comfy_cast_weights", False) for layer in targets)
    patched = [layer for layer in targets if PREFIX + layer.module_path + ".weight" in model.patches]
    if lowvram and patched:
        raise InvalidInputError(
            "the model runs in low-VRAM mode with patches (e.g. a LoRA) on its feed-forward layers; "
            "FIA cannot see the patched weights there. Run ComfyUI without --lowvram, or collect on the model before the LoRA."
        )


def _encode(clip, texts: list[str]) -> list:
    """One ComfyUI conditioning whose batch holds every prompt, in row order."""
    encoded = {}  # base prompts repeat across samples: encode each text once
    for text in dict.fromkeys(texts):
        encoded[text] = clip.encode_from_tokens_scheduled(clip.tokenize(text), show_pbar=False)[0]
    tensors, pooled = [], []
    for text in texts:
        cond, extra = encoded[text]
        tensors.append(cond)
        if extra.get("pooled_output") is not None:
            pooled.append(extra["pooled_output"])
    lengths = {t.shape[1] for t in tensors}
    if len(lengths) > 1:
        raise InvalidInputError(
            f"the prompts encode to different token lengths {sorted(lengths)}; keep each prompt under 75 tokens"
        )
    extra = {"pooled_output": torch.cat(pooled)} if pooled else {}
    return [[torch.cat(tensors), extra]]


def _chunk_conditioning(conditioning: list, part: slice) -> list:
    cond, extra = conditioning[0]
    extra = {k: (v[part] if torch.is_tensor(v) and v.shape[0] == cond.shape[0] else v) for k, v in extra.items()}
    return [[cond[part], extra]]


def _row_wrapper(collector: SaliencyCollector, groups: torch.Tensor, include_uncond: bool):
    ignored = torch.full_like(groups, -1)

    def wrapper(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        comfy.model_management.throw_exception_if_processing_interrupted()
        kinds = transformer_options.get("cond_or_uncond", [0])
        per_kind = x.shape[0] // max(1, len(kinds))
        rows = []
        for kind in kinds:  # 0 = conditional, 1 = unconditional
            chunk = groups if kind == 0 or include_uncond else ignored
            rows.append(chunk[:per_kind])
        collector.set_rows(torch.cat(rows))
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    return wrapper


def collect_saliency(
    model,
    clip,
    plan: PromptPlan,
    settings: CollectionSettings,
    progress: Callable[[int, int], None] | None = None,
) -> ConceptSaliency:
    """Stage 1 inside ComfyUI: one batched short trajectory for every concept of the plan."""
    settings.validate()
    targets = model_targets(model)
    _refuse_patched_lowvram(model, targets)
    collector = SaliencyCollector(
        targets,
        plan.groups,
        settings.saliency_steps,
        settings.mode,
        settings.r1,
        settings=dict(settings.__dict__, host="comfyui", sampler=SAMPLER, scheduler=SCHEDULER),
    )
    positive = _encode(clip, plan.texts)
    negative = _encode(clip, [""])
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), SCHEDULER, settings.steps)
    sampler = comfy.samplers.sampler_object(SAMPLER)
    latent_format = model.get_model_object("latent_format")
    size = (settings.resolution or 512) // 8
    shape = (latent_format.latent_channels, size, size)
    noise = torch.stack([initial_noise(shape, settings.seed, s.noise_index) for s in plan.samples])
    latents = torch.zeros_like(noise)
    groups = torch.tensor([s.group for s in plan.samples])
    chunks = [slice(i, min(i + settings.batch_size, len(groups))) for i in range(0, len(groups), settings.batch_size)]
    total, done = settings.saliency_steps * len(chunks), 0
    logger.info(
        "FIA saliency in ComfyUI: %d concepts, %d rows, %d of %d steps, mode %s",
        len(plan.groups.concepts),
        len(groups),
        settings.saliency_steps,
        settings.steps,
        settings.mode,
    )
    clones = []  # one private clone per row chunk, whose wrapper knows that chunk's rows
    for part in chunks:
        clone = model.clone()
        clone.add_wrapper_with_key(
            comfy.patcher_extension.WrappersMP.APPLY_MODEL,
            WRAPPER_KEY,
            _row_wrapper(collector, groups[part], settings.include_uncond),
        )
        clones.append(clone)
    with collector.attached():
        for step in range(settings.saliency_steps):
            collector.set_step(step)
            for part, clone in zip(chunks, clones, strict=True):
                # Step 0 starts from noise; later steps continue from the latents with no new noise.
                step_noise = noise[part] if step == 0 else torch.zeros_like(noise[part])
                latents[part] = comfy.sample.sample_custom(
                    clone,
                    step_noise,
                    settings.cfg,
                    sampler,
                    sigmas[step : step + 2],
                    _chunk_conditioning(positive, part),
                    negative,
                    latents[part],
                    disable_pbar=True,
                ).to(latents.dtype)
                done += 1
                if progress:
                    progress(done, total)
                comfy.model_management.throw_exception_if_processing_interrupted()
        saliency = collector.result()
    saliency.weight_signature = original_signature(model, targets)
    return saliency


class SparsePrunePatch(WeightAdapterBase):
    """A ComfyUI weight patch that scales the pruned entries of one weight by (1 - strength)."""

    name = "fia_prune"

    def __init__(self, indices: torch.Tensor, strength: float):
        self.indices = indices.to(torch.int32)
        self.prune_strength = strength
        self.loaded_keys = set()
        self.weights = [self.indices]

    def calculate_weight(
        self,
        weight,
        key,
        strength,
        strength_model,
        offset,
        function,
        intermediate_dtype=torch.float32,
        original_weight=None,
    ):
        return prune_in_place_(weight, self.indices, self.prune_strength * strength)

    @property
    def nbytes(self) -> int:
        return self.indices.numel() * self.indices.element_size()


def apply_mask(model, mask: FIAMask, strength: float):
    """A clone of MODEL whose target weights are pruned by the mask; the input MODEL is untouched."""
    strength = check_strength(strength)
    targets = model_targets(model)
    mask.check_compatible(targets.shapes, original_signature(model, targets), targets.family)
    patched = model.clone()
    patches = {
        PREFIX + layer.module_path + ".weight": SparsePrunePatch(mask.indices[layer.canonical].cpu(), strength)
        for layer in targets
        if mask.indices[layer.canonical].numel() and strength > 0
    }
    applied = patched.add_patches(patches, 1.0)
    if len(applied) != len(patches):
        raise InvalidInputError(f"only {len(applied)} of {len(patches)} FIA patches matched this model's keys")
    return patched
