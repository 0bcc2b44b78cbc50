"""FIAConceptSaliencyCollector: the one expensive step, a short batched denoising run."""

from __future__ import annotations

import comfy.utils
from comfy_api.latest import io

from ..fia_engine.diffusers_runner import CollectionSettings
from ..fia_engine.prompts import build_prompt_plan
from ..fia_engine.saliency import ConceptSaliency
from . import host
from .types import Saliency

# One source for the defaults: the engine's (paper) settings.
DEFAULTS = CollectionSettings()


class FIAConceptSaliencyCollector(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIAConceptSaliencyCollector",
            display_name="FIA Concept Saliency Collector",
            category="FIA unlearning",
            description=(
                "Runs a short denoising trajectory on prompts with and without each concept and records how much "
                "every feed-forward weight of the UNet works for the concept (Forget-It-All, stage 1). All concepts "
                "go through one batched run; only the saliency steps are run. The model is not changed."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The Stable Diffusion model (SD 1.x, 2.x or SDXL) to analyse."),
                io.Clip.Input("clip", tooltip="The text encoder that belongs to the model."),
                io.String.Input(
                    "concepts",
                    multiline=True,
                    default="",
                    tooltip="Concepts to unlearn, one per line (e.g. 'golf ball', 'Van Gogh', 'nudity').",
                ),
                io.Combo.Input(
                    "kind",
                    options=["object", "style", "explicit", "custom"],
                    default="object",
                    tooltip="Prompt templates: object 'a {concept} in a {place}', style 'a {thing} in the "
                    "style of {concept}', explicit 'a photo of a {concept} {person}', or custom.",
                ),
                io.String.Input(
                    "concept_template",
                    default="",
                    optional=True,
                    tooltip="custom kind: prompt with {concept} and optionally {context}.",
                ),
                io.String.Input(
                    "base_template",
                    default="",
                    optional=True,
                    tooltip="custom kind: the same prompt without the concept, may use {context}.",
                ),
                io.String.Input(
                    "contexts",
                    multiline=True,
                    default="",
                    optional=True,
                    tooltip="Optional context words, one per line, replacing the built-in places/things/persons.",
                ),
                io.Int.Input(
                    "pairs",
                    default=DEFAULTS.pairs,
                    min=1,
                    max=64,
                    tooltip="Prompt pairs per concept (K). The paper uses 10-30.",
                ),
                io.Int.Input(
                    "steps", default=DEFAULTS.steps, min=1, max=200, tooltip="Length of the denoising schedule."
                ),
                io.Int.Input(
                    "saliency_steps",
                    default=DEFAULTS.saliency_steps,
                    min=1,
                    max=200,
                    tooltip="First steps of the schedule that are observed; only these are run.",
                ),
                io.Float.Input(
                    "cfg",
                    default=DEFAULTS.cfg,
                    min=1.0,
                    max=30.0,
                    step=0.1,
                    tooltip="Classifier-free guidance scale of the trajectory.",
                ),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, tooltip="Seed of the initial noise."),
                io.Combo.Input(
                    "mode",
                    options=["fast", "exact"],
                    default="fast",
                    tooltip="fast: Wanda-form column statistics (tiny, r1 free later). exact: the full "
                    "cosine saliency (more memory, r1 fixed here).",
                ),
                io.Float.Input(
                    "r1",
                    default=DEFAULTS.r1,
                    min=0.001,
                    max=1.0,
                    step=0.001,
                    tooltip="exact mode only: per-step top fraction used by the time integration.",
                ),
                io.Int.Input(
                    "resolution",
                    default=512,
                    min=64,
                    max=2048,
                    step=64,
                    tooltip="Image size of the trajectory in pixels (512 for SD 1.x, 1024 for SDXL).",
                ),
                io.Boolean.Input(
                    "include_uncond",
                    default=False,
                    tooltip="Also observe the unconditional branch of classifier-free guidance.",
                ),
                io.Int.Input(
                    "batch_size",
                    default=DEFAULTS.batch_size,
                    min=1,
                    max=512,
                    tooltip="Prompt samples per UNet call; lower it if memory runs out.",
                ),
            ],
            outputs=[Saliency.Output(tooltip="Per concept and layer, what neuron localisation needs.")],
        )

    @classmethod
    def execute(
        cls,
        model,
        clip,
        concepts: str,
        kind: str,
        pairs: int,
        steps: int,
        saliency_steps: int,
        cfg: float,
        seed: int,
        mode: str,
        r1: float,
        resolution: int,
        include_uncond: bool,
        batch_size: int,
        concept_template: str = "",
        base_template: str = "",
        contexts: str = "",
    ) -> io.NodeOutput:
        context_list = [line for line in (contexts or "").splitlines() if line.strip()] or None
        settings = CollectionSettings(
            kind=kind,
            pairs=pairs,
            steps=steps,
            saliency_steps=saliency_steps,
            cfg=cfg,
            seed=seed,
            mode=mode,
            r1=r1,
            include_uncond=include_uncond,
            resolution=resolution,
            batch_size=batch_size,
            concept_template=concept_template or None,
            base_template=base_template or None,
            contexts=context_list,
        )
        settings.validate()
        plan = build_prompt_plan(concepts, kind, pairs, settings.concept_template, settings.base_template, context_list)
        bar = comfy.utils.ProgressBar(saliency_steps)
        saliency: ConceptSaliency = host.collect_saliency(
            model, clip, plan, settings, progress=lambda done, total: bar.update_absolute(done, total)
        )
        summary = {
            "concepts": list(saliency.concepts),
            "mode": saliency.mode,
            "family": saliency.family,
            "steps": len(saliency.steps),
            "rows": len(plan.samples),
        }
        return io.NodeOutput(saliency, ui={"fia_summary": [summary]})
