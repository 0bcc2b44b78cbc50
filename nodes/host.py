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

ScaPre: the prompts are tokenized and encoded by the CLIP exactly as CLIPTextEncode does
(the context the UNet's cross-attention sees), the to_k / to_v weights are read as this
MODEL computes with them, and the edit goes onto a clone as `LowRankDeltaPatch` adapters
that hold only the low-rank factors (or the dense delta where that is smaller).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import comfy.lora
import comfy.model_management
import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import comfy.utils
import torch
from comfy.weight_adapter.base import WeightAdapterBase

from ..fia_engine import InvalidInputError, SaliencyCollector, UnsupportedArchitectureError, find_target_layers
from ..fia_engine.diffusers_runner import CollectionSettings, initial_noise
from ..fia_engine.layers import UNetTargets
from ..fia_engine.masks import FIAMask, check_strength, prune_in_place_
from ..fia_engine.prompts import PromptPlan
from ..fia_engine.saliency import ConceptSaliency
from ..fia_engine.scapre import (
    CrossAttentionTargets,
    LayerDelta,
    ScaPreEdit,
    ScaPreSettings,
    check_scale,
    compute_edit,
    find_cross_attention_projections,
    row_owners,
    rows_at_positions,
    select_token_rows,
)
from ..fia_engine.scapre.layers import weight_mean_abs
from ..fia_engine.scapre.runner import check_prompts

logger = logging.getLogger(__name__)

WRAPPER_KEY = "fia_saliency"
PREFIX = "diffusion_model."
SAMPLER = "euler"
SCHEDULER = "normal"


def progress_callback() -> Callable[[int, int], None]:
    """An engine progress callback drawing a ComfyUI progress bar, made at its first update
    (a node run that reports nothing shows no bar)."""
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = comfy.utils.ProgressBar(total)
        bar.update_absolute(done, total)

    return update


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


# -- ScaPre ---------------------------------------------------------------------------------------


def scapre_targets(model) -> CrossAttentionTargets:
    """Every attn2 to_k / to_v of a ComfyUI MODEL; a clear error for anything that is not an SD UNet."""
    unet = getattr(getattr(model, "model", None), "diffusion_model", None)
    if unet is None:
        raise InvalidInputError(f"expected a ComfyUI MODEL (ModelPatcher), got {type(model).__name__}")
    return find_cross_attention_projections(unet)


def _weight_key(module_path: str) -> str:
    return PREFIX + module_path + ".weight"


def model_weights(model, targets: CrossAttentionTargets) -> dict[str, torch.Tensor]:
    """canonical name -> the to_k / to_v weight this MODEL computes with (read, never written).

    What is read, per key, from `get_key_patches`: the checkpoint's own tensor (the
    ModelPatcher's backup while another clone's patches sit in the shared module, so never
    another clone's edit), passed through the layer's convert function (quantised formats).
    Where this MODEL itself carries patches on the key (a LoRA, an earlier FIA or ScaPre node),
    they are applied to a float32 copy with `comfy.lora.calculate_weight`, exactly as ComfyUI
    does when it loads the model: the edit is solved for the weights the sampler will use and
    is then stacked on top of those patches. Unpatched tensors are returned as they are.
    """
    key_patches = model.get_key_patches(filter_prefix=PREFIX)
    weights = {}
    for target in targets:
        key = _weight_key(target.module_path)
        if key not in key_patches:
            raise UnsupportedArchitectureError(f"the model has no weight {key!r} although its UNet has that layer")
        (weight, convert), *patches = key_patches[key]
        if patches:
            weight = convert(weight.detach().to(torch.float32, copy=True), inplace=True)
            weight = comfy.lora.calculate_weight(patches, weight, key)
        else:
            weight = convert(weight.detach(), inplace=False)
        weights[target.canonical] = weight
    return weights


def prompt_length(tokens: dict, text: str = "") -> int:
    """Real tokens of one tokenized prompt (start and end token included), from ComfyUI's word ids.

    ``tokens`` is ``clip.tokenize(text, return_word_ids=True)``: per text encoder ("l", "h",
    "g", ...) a list of 77-token chunks of ``(token, weight, word_id)``; word id 0 marks the
    start, end and padding tokens. The prompt ends with the end token after its last word.
    SDXL's two encoders must agree (they share CLIP's vocabulary).
    """
    lengths = {}
    for encoder, chunks in tokens.items():
        if len(chunks) != 1:
            raise InvalidInputError(
                f"the prompt {text[:40]!r}... fills {len(chunks)} chunks of {len(chunks[0])} tokens; ScaPre edits "
                "the token positions of one chunk: shorten it to at most 75 tokens"
            )
        word_ids = [entry[2] for entry in chunks[0]]
        if not word_ids or word_ids[0] != 0:
            raise UnsupportedArchitectureError(
                f"text encoder {encoder!r} puts no start token before the prompt; ScaPre needs CLIP-style "
                "prompts (start token, words, end token)"
            )
        words = [i for i, word in enumerate(word_ids) if word > 0]
        length = words[-1] + 2 if words else 2
        if length > len(word_ids):
            raise InvalidInputError(f"the prompt {text[:40]!r} has no room for its end token; shorten it")
        lengths[encoder] = length
    if not lengths:
        raise UnsupportedArchitectureError("the CLIP's tokenizer returned no tokens")
    if len(set(lengths.values())) != 1:
        raise UnsupportedArchitectureError(
            f"the text encoders tokenize the prompt to different lengths {lengths}; ScaPre needs one length"
        )
    return lengths.popitem()[1]


def encode_prompt(clip, text: str) -> tuple[torch.Tensor, int]:
    """(tokens, width) conditioning of one prompt, as CLIPTextEncode gives it to the UNet, and its length."""
    if clip is None:
        raise InvalidInputError("no CLIP given: connect the text encoder that belongs to the model")
    length = prompt_length(clip.tokenize(text, return_word_ids=True), text)
    cond = clip.encode_from_tokens(clip.tokenize(text))
    if cond.dim() != 3 or cond.shape[0] != 1:
        raise UnsupportedArchitectureError(
            f"the CLIP encodes one prompt to shape {tuple(cond.shape)}, not (1, tokens, width)"
        )
    if length > cond.shape[1]:
        raise UnsupportedArchitectureError(f"the CLIP gives {cond.shape[1]} token rows for a prompt of {length} tokens")
    return cond[0].to(torch.float32), length


def _encode_many(clip, texts, tick: Callable[[], None]) -> tuple[torch.Tensor, list[int]]:
    """Every prompt's conditioning stacked (prompts, tokens, width) and the prompts' lengths."""
    conds, lengths = [], []
    for text in texts:
        cond, length = encode_prompt(clip, text)
        conds.append(cond)
        lengths.append(length)
        tick()
    if len({c.shape for c in conds}) > 1:
        raise InvalidInputError(f"the prompts encode to different shapes {sorted({tuple(c.shape) for c in conds})}")
    return torch.stack(conds), lengths


def scapre_edit(
    model,
    clip,
    concepts,
    anchor: str = "",
    preserve=(),
    settings: ScaPreSettings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ScaPreEdit:
    """ScaPre inside ComfyUI: the edit of the MODEL's cross-attention for the concepts (nothing is modified)."""
    settings = (settings or ScaPreSettings()).validate()
    concepts, anchor, preserve = check_prompts(concepts, anchor, preserve)
    targets = scapre_targets(model)
    total, done = len(concepts) + len(preserve) + 3, 0  # prompts, anchor, empty prompt, the solve

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)
        comfy.model_management.throw_exception_if_processing_interrupted()

    concept_conds, lengths = _encode_many(clip, concepts, tick)
    width = concept_conds.shape[-1]
    if width != targets.context_dim:
        raise InvalidInputError(
            f"the CLIP gives {width}-wide token embeddings but the model's cross-attention takes "
            f"{targets.context_dim} ({targets.family}): connect the CLIP that belongs to this model"
        )
    anchor_cond, _ = encode_prompt(clip, anchor)
    tick()
    empty_cond, _ = encode_prompt(clip, "")
    tick()
    preserve_rows = None
    if preserve:
        preserve_conds, preserve_lengths = _encode_many(clip, preserve, tick)
        preserve_rows = select_token_rows(preserve_conds, preserve_lengths)
    metadata = {
        "concepts": list(concepts),
        "anchor": anchor,
        "preserve": list(preserve),
        "family": targets.family,
        "source": "comfyui",
        "token_lengths": dict(zip(concepts, lengths, strict=True)),
    }
    edit = compute_edit(
        model_weights(model, targets),
        select_token_rows(concept_conds, lengths),
        rows_at_positions(anchor_cond, lengths),
        preserve_rows,
        settings,
        empty_tokens=rows_at_positions(empty_cond, lengths),
        metadata=metadata,
        concept_ids=row_owners(lengths),  # one prompt per concept
    )
    tick()
    return edit


class LowRankDeltaPatch(WeightAdapterBase):
    """A ComfyUI weight patch adding strength * (up @ down), or strength * dense, to one weight.

    It holds only the ScaPre factors; the dense delta exists only inside ComfyUI's working copy
    of the weight while the model is loaded (the same place a LoRA's product goes).
    """

    name = "fia_scapre"

    def __init__(self, delta: LayerDelta):
        self.loaded_keys = set()
        self.weights = [t.detach().to(torch.float32) for t in delta.tensors()]
        self.shape = delta.shape

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
        if tuple(weight.shape) != tuple(self.shape):
            logger.error(
                "ScaPre patch for %s has shape %s, the weight is %s: not applied", key, self.shape, weight.shape
            )
            return weight
        parts = [comfy.model_management.cast_to_device(t, weight.device, intermediate_dtype) for t in self.weights]
        delta = parts[0] if len(parts) == 1 else parts[0] @ parts[1]
        weight += function((strength * delta).type(weight.dtype))
        return weight

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.weights)


def _patched_clone(model, edit: ScaPreEdit, scale: float, targets: CrossAttentionTargets):
    patched = model.clone()
    if scale == 0:
        return patched
    patches = {
        _weight_key(target.module_path): LowRankDeltaPatch(edit.layers[target.canonical])
        for target in targets
        if target.canonical in edit.layers
    }
    applied = patched.add_patches(patches, scale)
    if len(applied) != len(patches):
        raise InvalidInputError(f"only {len(applied)} of {len(patches)} ScaPre patches matched this model's keys")
    return patched


def erase_with_scapre(model, clip, concepts, anchor, preserve, settings, scale: float, progress=None):
    """(clone of MODEL with the edit at ``scale``, the edit); the input MODEL is untouched."""
    scale = check_scale(scale)
    targets = scapre_targets(model)
    edit = scapre_edit(model, clip, concepts, anchor, preserve, settings, progress)
    return _patched_clone(model, edit, scale, targets), edit


def apply_scapre_edit(model, edit: ScaPreEdit, scale: float):
    """A clone of MODEL with W + scale * delta on every projection of the edit; the input MODEL is untouched.

    An edit for another architecture is refused; for another checkpoint of the same one (or the
    same checkpoint under other patches) it applies with a warning.
    """
    scale = check_scale(scale)
    targets = scapre_targets(model)
    signature = {name: weight_mean_abs(weight) for name, weight in model_weights(model, targets).items()}
    edit.check_compatible(targets.shapes, signature, targets.family)
    return _patched_clone(model, edit, scale, targets)
