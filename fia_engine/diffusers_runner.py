"""Run FIA on a local diffusers Stable Diffusion folder (``save_pretrained`` layout).

Only what the saliency needs is loaded (UNet, text encoder, tokenizer, scheduler config; no
VAE) and only the saliency steps of the schedule are run: with 10 saliency steps of a
50-step schedule, the UNet is called 10 times per row chunk and the scheduler 9 times.
The trajectory uses DDIM by default, or Euler with linearly spaced timesteps (what
ComfyUI's "euler" sampler with the "normal" scheduler runs, for parity with the nodes),
built from the folder's own scheduler config; each row chunk has its own scheduler
because Euler counts its steps.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .devices import default_device
from .errors import InvalidInputError, UnsupportedArchitectureError
from .layers import find_target_layers
from .localize import check_ratio
from .prompts import PromptPlan, build_prompt_plan, parse_concepts
from .saliency import MODES, ConceptSaliency, SaliencyCollector
from .timing import PhaseTimer

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
SAMPLERS = ("ddim", "euler")


@dataclass
class CollectionSettings:
    """Everything that shapes a saliency collection (paper defaults)."""

    kind: str = "object"
    pairs: int = 10
    steps: int = 50
    saliency_steps: int = 10
    cfg: float = 7.5
    seed: int = 0
    mode: str = "fast"
    r1: float = 0.05  # exact mode integrates over time during collection, so r1 is fixed there
    include_uncond: bool = False
    resolution: int | None = None  # pixels; default: the UNet's native size
    batch_size: int = 16  # prompt samples per UNet call (x2 rows with guidance)
    sampler: str = "ddim"  # or "euler": ComfyUI's euler sampler on its normal schedule, step for step
    timestep_spacing: str | None = None  # leading / linspace / trailing; None: the folder's scheduler config
    concept_template: str | None = None
    base_template: str | None = None
    contexts: list[str] | None = None

    def validate(self) -> None:
        if self.mode not in MODES:
            raise InvalidInputError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.steps < 1 or not 1 <= self.saliency_steps <= self.steps:
            raise InvalidInputError(
                f"saliency steps must be between 1 and the schedule's steps ({self.steps}), got {self.saliency_steps}"
            )
        if self.cfg < 1.0:
            raise InvalidInputError(f"cfg must be >= 1 (1 = no classifier-free guidance), got {self.cfg}")
        if self.batch_size < 1:
            raise InvalidInputError(f"batch size must be >= 1, got {self.batch_size}")
        if self.resolution is not None and (self.resolution < 8 or self.resolution % 8):
            raise InvalidInputError(f"resolution must be a multiple of 8, got {self.resolution}")
        check_ratio("r1", self.r1)
        if self.timestep_spacing not in (None, "leading", "linspace", "trailing"):
            raise InvalidInputError(
                f"timestep spacing must be leading, linspace or trailing, got {self.timestep_spacing!r}"
            )
        if self.sampler not in SAMPLERS:
            raise InvalidInputError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")


@dataclass
class DiffusersComponents:
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict
    latent_scale: int  # pixels per latent cell: 8 with a VAE, 1 for pixel-space models
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype


def parse_dtype(name: str) -> torch.dtype:
    table = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "fp16": torch.float16,
        "float16": torch.float16,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
    }
    if name not in table:
        raise InvalidInputError(f"dtype must be one of fp32, fp16, bf16, got {name!r}")
    return table[name]


def check_pipeline_folder(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise InvalidInputError(f"pipeline folder not found: {path}")
    for part in ("unet", "text_encoder", "tokenizer", "scheduler"):
        if not (path / part).is_dir():
            raise InvalidInputError(f"{path} is not a diffusers Stable Diffusion folder: it has no '{part}/' subfolder")
    return path


def _load_unet(path: Path, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """The UNet, its weights read straight onto the device in the wanted dtype.

    The module is built on the meta device (no random initialisation, which diffusers does
    when accelerate is missing) and takes the file's tensors as its parameters. Anything the
    file does not fit exactly (other key names, sharded or pickled weights) goes through
    diffusers' own from_pretrained instead.
    """
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    weights = path / "unet" / "diffusion_pytorch_model.safetensors"
    if weights.is_file():
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(path / "unet"))
        state = {name: tensor.to(dtype) for name, tensor in load_file(str(weights), device=str(device)).items()}
        missing, unexpected = unet.load_state_dict(state, strict=False, assign=True)
        if not missing and not unexpected and not any(t.is_meta for t in (*unet.parameters(), *unet.buffers())):
            return unet.eval()
        logger.info("unet: %d missing and %d unexpected keys; loading with diffusers", len(missing), len(unexpected))
    return UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype).to(device).eval()


def load_components(
    path: str | Path, device: str | None = None, dtype: torch.dtype = torch.float32
) -> DiffusersComponents:
    """Load what the saliency run needs from a diffusers folder (no VAE)."""
    from transformers import AutoTokenizer, CLIPTextModel

    path = check_pipeline_folder(path)
    device = device or default_device()
    unet = _load_unet(path, device, dtype)
    if getattr(unet.config, "addition_embed_type", None) is not None:
        raise UnsupportedArchitectureError(
            f"{path}: the UNet needs added conditioning ({unet.config.addition_embed_type}, e.g. SDXL); "
            "the diffusers runner covers SD 1.x / 2.x folders. Use the ComfyUI nodes for SDXL."
        )
    text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", torch_dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, subfolder="tokenizer")
    scheduler_config = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    vae_config = path / "vae" / "config.json"
    latent_scale = 1
    if vae_config.is_file():
        latent_scale = 2 ** (len(json.loads(vae_config.read_text()).get("block_out_channels", [0])) - 1)
    return DiffusersComponents(unet, text_encoder, tokenizer, scheduler_config, latent_scale, source=str(path))


@torch.no_grad()
def encode_prompts(components: DiffusersComponents, texts: list[str]) -> torch.Tensor:
    tokenizer = components.tokenizer
    # Some tokenizer configs say model_max_length = 8192 or more; the encoder decides the real limit.
    length = min(tokenizer.model_max_length, components.text_encoder.config.max_position_embeddings)
    tokens = tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    hidden = components.text_encoder(tokens.input_ids.to(components.device))[0]
    return hidden.to(components.dtype)


def initial_noise(shape: tuple[int, ...], seed: int, index: int) -> torch.Tensor:
    """Noise of sample ``index``: the same on every device, shared by a concept/base pair."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
    return torch.randn(shape, generator=generator)


def comfy_normal_sigmas(alphas_cumprod: torch.Tensor, steps: int) -> list[float]:
    """ComfyUI's "normal" schedule: timesteps evenly spaced from the last training step to 0,
    sigma interpolated in log space between the training sigmas, then a final 0."""
    log_sigmas = (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).double().log()
    t = torch.linspace(len(log_sigmas) - 1, 0, steps, dtype=torch.float64)
    low, high, frac = t.floor().long(), t.ceil().long(), t.frac()
    return ((1 - frac) * log_sigmas[low] + frac * log_sigmas[high]).exp().tolist() + [0.0]


def _scheduler(components: DiffusersComponents, steps: int, sampler: str, spacing: str | None = None):
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    config = {k: v for k, v in components.scheduler_config.items() if not k.startswith("_")}
    if sampler == "euler":
        scheduler = EulerDiscreteScheduler.from_config({**config, "timestep_spacing": spacing or "linspace"})
        if not spacing:
            scheduler.set_timesteps(sigmas=comfy_normal_sigmas(scheduler.alphas_cumprod, steps))
            return scheduler
    else:
        scheduler = DDIMScheduler.from_config({**config, **({"timestep_spacing": spacing} if spacing else {})})
    scheduler.set_timesteps(steps)
    return scheduler


@torch.no_grad()
def collect_saliency(
    components: DiffusersComponents,
    concepts,
    settings: CollectionSettings | None = None,
    progress: Progress | None = None,
    plan: PromptPlan | None = None,
    timer: PhaseTimer | None = None,
    keep_contrast: bool = False,
) -> ConceptSaliency:
    """Stage 1 on a diffusers UNet: one batched short trajectory for all concepts.

    keep_contrast: fast mode also keeps the terms of its column contrast (for diagnostics)."""
    timer = timer or PhaseTimer()
    settings = settings or CollectionSettings()
    settings.validate()
    plan = plan or build_prompt_plan(
        concepts, settings.kind, settings.pairs, settings.concept_template, settings.base_template, settings.contexts
    )
    unet, device = components.unet, components.device
    targets = find_target_layers(unet)
    collector = SaliencyCollector(
        targets,
        plan.groups,
        settings.saliency_steps,
        settings.mode,
        settings.r1,
        settings=asdict(settings),
        keep_contrast=keep_contrast,
    )
    size = (settings.resolution or unet.config.sample_size * components.latent_scale) // components.latent_scale
    latent_shape = (unet.config.in_channels, size, size)
    chunks = [
        slice(i, min(i + settings.batch_size, len(plan.samples)))
        for i in range(0, len(plan.samples), settings.batch_size)
    ]
    schedulers = [_scheduler(components, settings.steps, settings.sampler, settings.timestep_spacing) for _ in chunks]
    scheduler = schedulers[0]
    guided = settings.cfg > 1.0
    with timer.phase("encode"):
        cond = encode_prompts(components, plan.texts)
        uncond = encode_prompts(components, [""]) if guided else None
    groups = torch.tensor([s.group for s in plan.samples], device=device)
    latents = torch.stack([initial_noise(latent_shape, settings.seed, s.noise_index) for s in plan.samples])
    latents = (latents * scheduler.init_noise_sigma).to(device, components.dtype)
    chunks = [
        slice(i, min(i + settings.batch_size, len(plan.samples)))
        for i in range(0, len(plan.samples), settings.batch_size)
    ]
    total, done = settings.saliency_steps * len(chunks), 0
    logger.info(
        "FIA saliency: %d concepts, %d prompt rows, %d of %d steps, mode %s",
        len(plan.groups.concepts),
        len(plan.samples),
        settings.saliency_steps,
        settings.steps,
        settings.mode,
    )
    with timer.phase("collect"), collector.attached():
        for step, timestep in enumerate(scheduler.timesteps[: settings.saliency_steps]):
            collector.set_step(step)
            last = step == settings.saliency_steps - 1
            for part, chunk_scheduler in zip(chunks, schedulers, strict=True):
                rows = groups[part]
                latent_in, context = latents[part], cond[part]
                if guided:
                    uncond_rows = rows if settings.include_uncond else torch.full_like(rows, -1)
                    rows = torch.cat([uncond_rows, rows])
                    latent_in = torch.cat([latent_in, latent_in])
                    context = torch.cat([uncond.expand(len(context), -1, -1), context])
                collector.set_rows(rows)
                model_input = chunk_scheduler.scale_model_input(latent_in, timestep)
                # ComfyUI hands its UNet the nearest whole training step; so does the euler mode here.
                unet_timestep = timestep.round() if settings.sampler == "euler" else timestep
                noise = unet(model_input, unet_timestep, encoder_hidden_states=context).sample
                if not last:  # the trajectory ends with the last saliency step's forward pass
                    if guided:
                        noise_uncond, noise_cond = noise.chunk(2)
                        noise = noise_uncond + settings.cfg * (noise_cond - noise_uncond)
                    latents[part] = chunk_scheduler.step(noise, timestep, latents[part]).prev_sample
                done += 1
                if progress:
                    progress(done, total)
        saliency = collector.result()
    return saliency


def unlearn(
    components: DiffusersComponents,
    concepts,
    settings: CollectionSettings | None = None,
    r2: float = 0.01,
    alpha: float = 0.6,
    r2_per_concept: dict[str, float] | None = None,
    protect_agnostic: bool = True,
    progress: Progress | None = None,
    timer: PhaseTimer | None = None,
):
    """All three stages on a diffusers UNet; returns the FIAMask (the model is not modified)."""
    from .fusion import fuse
    from .neurons import localize_concepts, resolve_r2

    timer = timer or PhaseTimer()
    settings = settings or CollectionSettings()
    concepts = parse_concepts(concepts)
    check_ratio("alpha", alpha)
    resolve_r2(concepts, r2, r2_per_concept)  # fail before the slow part, not after it
    saliency = collect_saliency(components, concepts, settings, progress, timer=timer)
    with timer.phase("localise"):
        masks = localize_concepts(saliency, settings.r1, r2, r2_per_concept)
    with timer.phase("fuse"):
        return fuse(masks, alpha, protect_agnostic)
