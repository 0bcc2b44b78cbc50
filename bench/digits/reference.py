"""The FIA authors' public code as a reference row on a digits model (issue 12, item 3).

Whoever runs this fetches github.com/kaiyuan02415/Forget-It-All and passes its folder; nothing
of it is committed here. Its code runs unmodified: its collection (fia.saliency), its
localisation (fia.neurons) and its fusion (fia.mask_fusion). Two things are adapted, because
the release is written for Stable Diffusion checkpoints and its own prompt lists:

- the pipeline. The release loads SD with diffusers' StableDiffusionPipeline and only ever
  calls ``pipe(prompt, num_inference_steps=, guidance_scale=, output_type="latent")`` and reads
  ``pipe.unet``. That pipeline cannot load a pixel-space folder without a VAE, so
  `PipelineAdapter` does what its ``__call__`` does with this folder's parts: the folder's
  scheduler with clip_sample off (StableDiffusionPipeline switches it off on load), starting
  noise and step noise from torch's global generator (which the release re-seeds before every
  prompt), one UNet call per step on the [unconditional, conditional] pair;
- the prompts: its object/art/explicit word lists are not in this model's vocabulary, so the
  concept and base prompts are the benchmark's own (unlearning.CONCEPT_TEMPLATE/BASE_TEMPLATE).
Its progress bars are silenced; nothing else of it is touched.

`ReleaseVariant` switches one difference at a time to the engine's choice, so the effect of
each on P1 can be measured with the release's own code (``--differences``).
"""

from __future__ import annotations

import copy
import importlib
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from fia_engine import find_target_layers
from fia_engine.errors import InvalidInputError

from .data import CONTEXTS
from .gate import as_mask
from .sampling import Components, embed
from .unlearning import BASE_TEMPLATE, CONCEPT_TEMPLATE, FiaSettings

logger = logging.getLogger(__name__)

RELEASE_MODULES = ("fia.utils", "fia.hooks", "fia.saliency", "fia.neurons", "fia.mask_fusion")
RELEASE_SEED = 1244  # the seed of the release's configs/*.yaml
RELEASE_GUIDANCE = 7.5  # hard-coded in its fia/saliency.py


@dataclass(frozen=True)
class ReleaseVariant:
    """How the release is run. The defaults are the release's own behaviour."""

    name: str = "FIA authors' code"
    guidance: float | None = None  # None: what the release asks for (7.5)
    conditional_rows_only: bool = False  # release: the uncond and cond rows of a prompt form one column norm
    sampler: str = "release"  # "release": the folder's DDPM (50 leading steps); "engine": DDIM, trailing spacing
    noise_per_pair: bool = False  # release: one noise for every prompt (it re-seeds before each)


def release_variants(bench_cfg: float) -> list[ReleaseVariant]:
    """The release as it is, then each collection difference set to the engine's benchmark choice."""
    return [
        ReleaseVariant(),
        ReleaseVariant(f"... guidance {bench_cfg:g} (the benchmark's) instead of 7.5", guidance=bench_cfg),
        ReleaseVariant("... conditional rows only (the engine's)", conditional_rows_only=True),
        ReleaseVariant("... DDIM, trailing spacing (the engine's sampler here)", sampler="engine"),
        ReleaseVariant("... one noise per prompt pair (the engine's)", noise_per_pair=True),
        ReleaseVariant(
            "... all four of the engine's choices",
            guidance=bench_cfg,
            conditional_rows_only=True,
            sampler="engine",
            noise_per_pair=True,
        ),
    ]


def load_release(folder: str | Path):
    """Import the release's modules from ``folder``; a clear error if it is not that release."""
    folder = Path(folder)
    missing = [f for f in (m.replace(".", "/") + ".py" for m in RELEASE_MODULES) if not (folder / f).is_file()]
    if missing:
        raise InvalidInputError(
            f"{folder} is not a folder of the FIA authors' release (missing {', '.join(missing)}): "
            "fetch github.com/kaiyuan02415/Forget-It-All and pass the folder that holds its fia/ package"
        )
    loaded = sys.modules.get("fia")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve().parent.parent != folder.resolve():
        raise InvalidInputError(f"another package named 'fia' is already imported ({loaded.__file__})")
    sys.path.insert(0, str(folder.resolve()))
    try:
        modules = {name.split(".")[1]: importlib.import_module(name) for name in RELEASE_MODULES}
    except ImportError as error:
        raise InvalidInputError(
            f"the release's code does not import here ({error}); install what its requirements.txt names"
        ) from error
    finally:
        sys.path.remove(str(folder.resolve()))
    # display only: its per-prompt progress bars would bury the log (tqdm reads TQDM_DISABLE too early)
    modules["saliency"].tqdm = SimpleNamespace(tqdm=lambda iterable, **_: iterable)
    return modules


class PipelineAdapter:
    """StableDiffusionPipeline.__call__(..., output_type="latent") for a digits model folder."""

    def __init__(self, components: Components, variant: ReleaseVariant, noise_seed: int = RELEASE_SEED):
        self.unet = components.unet
        self.components = components
        self.variant = variant
        self.noise_seed = noise_seed
        # a copy without the release's hooks runs the unconditional rows when they must stay unseen
        self._unhooked_unet = copy.deepcopy(components.unet) if variant.conditional_rows_only else None
        config = components.scheduler.config
        if variant.sampler == "engine":  # as the engine's collection and the benchmark's sampler build it
            self.scheduler = DDIMScheduler.from_config(config, timestep_spacing="trailing")
        else:
            self.scheduler = DDPMScheduler.from_config(config, clip_sample=False)
        self.calls = 0

    def _reseed_per_pair(self, prompt: str) -> None:
        """Concept prompt i and base prompt i share noise i (the engine's pairing)."""
        index = next((i for i, context in enumerate(CONTEXTS) if prompt.endswith(context)), None)
        if index is None:
            raise ValueError(f"no benchmark context in prompt {prompt!r}")
        torch.manual_seed(self.noise_seed * 1000 + index)

    @torch.no_grad()
    def __call__(self, prompt: str, num_inference_steps: int = 50, guidance_scale: float = 7.5, **_) -> torch.Tensor:
        self.calls += 1
        if self.variant.noise_per_pair:
            self._reseed_per_pair(prompt)
        guidance = self.variant.guidance if self.variant.guidance is not None else guidance_scale
        cond, uncond = embed(self.components, [prompt]), embed(self.components, [""])
        config = self.unet.config
        latents = torch.randn(1, config.in_channels, config.sample_size, config.sample_size)
        latents = latents * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps)
        for t in self.scheduler.timesteps:
            x = self.scheduler.scale_model_input(latents, t)
            if self._unhooked_unet is not None:
                eps_uncond = self._unhooked_unet(x, t, uncond).sample
                eps_cond = self.unet(x, t, cond).sample
            else:
                eps_uncond, eps_cond = self.unet(torch.cat([x, x]), t, torch.cat([uncond, cond])).sample.chunk(2)
            latents = self.scheduler.step(eps_uncond + guidance * (eps_cond - eps_uncond), t, latents).prev_sample
        return latents


@dataclass(frozen=True)
class ReleaseSettings:
    """The release's hyper-parameters: the benchmark's FIA settings (steps, r1, r2, alpha, pairs) and its seed."""

    fia: FiaSettings = FiaSettings()
    seed: int = RELEASE_SEED

    def validate(self) -> None:
        if not 1 <= self.fia.pairs <= len(CONTEXTS):
            raise InvalidInputError(f"--pairs must be between 1 and {len(CONTEXTS)}, got {self.fia.pairs}")
        if not 1 <= self.fia.saliency_steps <= self.fia.steps:
            raise InvalidInputError(
                f"saliency steps must be between 1 and {self.fia.steps}, got {self.fia.saliency_steps}"
            )


def digit_prompts(word: str, pairs: int) -> tuple[list[str], list[str]]:
    contexts = CONTEXTS[:pairs]
    return (
        [CONCEPT_TEMPLATE.format(concept=word, context=c) for c in contexts],
        [BASE_TEMPLATE.format(context=c) for c in contexts],
    )


def release_mask(release: dict, components: Components, concepts: list[str], settings: ReleaseSettings, variant=None):
    """The release's fused mask for ``concepts`` as an FIAMask of this model, and the seconds it took."""
    variant = variant or ReleaseVariant()
    settings.validate()
    start = time.perf_counter()
    cfg = release["utils"].FIAConfig(
        task="object",
        model_id="(digits model, loaded by the adapter)",
        seed=settings.seed,
        dtype="float32",
        inference_steps=settings.fia.steps,
        saliency_steps=settings.fia.saliency_steps,
        r1=settings.fia.r1,
        r2=settings.fia.r2,
        alpha=settings.fia.alpha,
        device="cpu",
    )
    pipe = PipelineAdapter(components, variant, settings.seed)
    per_concept = []
    for concept in concepts:
        concept_prompts, base_prompts = digit_prompts(concept, settings.fia.pairs)
        saliency = release["saliency"].compute_concept_saliency(pipe, concept_prompts, base_prompts, cfg)
        per_concept.append(release["neurons"].build_concept_mask(saliency, cfg))
    prune, stats = release["mask_fusion"].fuse_masks(per_concept, cfg.alpha)
    canonical = {id(t.module): t.canonical for t in find_target_layers(components.unet)}
    indices = {}
    for (name, module), layer_mask in zip(release["utils"].ffn2_layers(components.unet), prune, strict=True):
        if id(module) not in canonical:
            raise ValueError(f"the release prunes {name}, which the engine does not target")
        indices[canonical[id(module)]] = torch.nonzero(layer_mask.flatten()).flatten()
    mask = as_mask(components.unet, indices, variant.name, method="FIA authors' release via bench/digits/reference.py")
    seconds = time.perf_counter() - start
    logger.info(
        "%s: %.3f %% pruned (the release's own count: %.3f %%), %d pipeline calls, %.1f s",
        variant.name,
        100 * mask.pruned_fraction,
        100 * stats["overall_pruned_ratio"],
        pipe.calls,
        seconds,
    )
    return mask, seconds
