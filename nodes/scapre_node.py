"""FIAScaPreErase / FIAApplyScaPreEdit: ScaPre, a closed-form edit of the cross-attention keys and values.

No sampling run: the concepts are encoded by the CLIP and the edit is solved from the
to_k / to_v weights in seconds, for one concept or fifty. The numerics are the engine's
(fia_engine/scapre); host.py reads the weights and patches a clone.
"""

from __future__ import annotations

import comfy.utils
from comfy_api.latest import io

from ..fia_engine.scapre import ScaPreEdit, ScaPreSettings
from ..fia_engine.scapre.edit import MAX_SCALE
from ..fia_engine.scapre.settings import BURES_FORMS, SPECTRAL_FORMS
from . import host
from .summary import scapre_summary, ui
from .types import ScaPreEdit as ScaPreEditType

# One source for the defaults: the engine's settings (the authors' release values; docs/scapre.md).
DEFAULTS = ScaPreSettings()

SCALE_TOOLTIP = (
    f"Erase strength: the weights become W + scale × delta. 1 = the edit as solved, 0 = no change, "
    f"above 1 overshoots toward the anchor (up to {MAX_SCALE:g})."
)


def _scale_input() -> io.Float.Input:
    return io.Float.Input("scale", default=1.0, min=0.0, max=MAX_SCALE, step=0.05, tooltip=SCALE_TOOLTIP)


class FIAScaPreErase(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIAScaPreErase",
            display_name="FIA ScaPre Erase",
            category="FIA unlearning",
            description=(
                "Erases many concepts at once with ScaPre: a closed-form edit of every cross-attention key and value "
                "projection (to_k / to_v), solved from the concept prompts alone: no sampling run, seconds even for "
                "dozens of concepts. Returns a copy of the model with the edit as compact low-rank patches; the input "
                "model is not modified. Prefer FIA (saliency + mask) for precise pruning of a few concepts."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The Stable Diffusion model (SD 1.x, 2.x or SDXL) to edit."),
                io.Clip.Input(
                    "clip",
                    tooltip="The text encoder that belongs to the model; the prompts are encoded exactly as for sampling.",
                ),
                io.String.Input(
                    "concepts",
                    multiline=True,
                    default="",
                    tooltip="Concepts to erase, one per line (e.g. 'golf ball', 'Van Gogh'). Each line is encoded as "
                    "its own prompt.",
                ),
                io.String.Input(
                    "anchor",
                    default="",
                    tooltip="What the concepts are mapped onto. Empty (default): the empty prompt, so a prompt with a "
                    "concept draws what it would draw without the concept's words.",
                ),
                io.Combo.Input(
                    "mode",
                    options=["scapre", "uce"],
                    default=DEFAULTS.mode,
                    tooltip="scapre: the closed form plus the four ScaPre steps below. uce: the closed form alone "
                    "(the switches below are ignored).",
                ),
                _scale_input(),
                io.Boolean.Input(
                    "row_mask",
                    default=DEFAULTS.row_mask,
                    tooltip="Information row mask, as the authors' release applies it: output rows that tell the "
                    "concept from the empty prompt map it onto the anchor, the other rows damp it toward zero.",
                ),
                io.Float.Input(
                    "mask_power",
                    default=DEFAULTS.mask_power,
                    min=0.1,
                    max=64.0,
                    step=0.1,
                    tooltip="Sharpness p of the row mask sigmoid(z / 0.7)^p: higher leaves fewer rows on the anchor.",
                ),
                io.Boolean.Input(
                    "spectral",
                    default=DEFAULTS.spectral,
                    tooltip="Damp the directions many concepts share, so concepts do not pull the edit against each "
                    "other or against the preserved prompts.",
                ),
                io.Float.Input(
                    "spectral_rho",
                    default=DEFAULTS.spectral_rho,
                    min=0.01,
                    max=100.0,
                    step=0.01,
                    tooltip="How many concepts may pile onto one direction before it is damped to half: lower damps "
                    "more. One concept alone is never damped by more than 1 / (1 + rho).",
                ),
                io.Combo.Input(
                    "spectral_form",
                    options=list(SPECTRAL_FORMS),
                    default=DEFAULTS.spectral_form,
                    tooltip="cap: our smooth cap of shared directions (uses spectral_rho). release: the authors' "
                    "release's step, which pushes the layers' response to the concepts' less shared part to zero.",
                ),
                io.Boolean.Input(
                    "bures",
                    default=DEFAULTS.bures,
                    tooltip="Pull every edited row back toward the original row's geometry (Bures proximal step).",
                ),
                io.Float.Input(
                    "bures_eta",
                    default=DEFAULTS.bures_eta,
                    min=0.0,
                    max=10.0,
                    step=0.01,
                    tooltip="Strength eta of the pull back (form exact): rows move 1 / (1 + eta) of the way.",
                ),
                io.Combo.Input(
                    "bures_form",
                    options=list(BURES_FORMS),
                    default=DEFAULTS.bures_form,
                    tooltip="exact: our proximal step, keeps the edit low rank (uses bures_eta). release: the authors' "
                    "release's length-and-direction step, its strength from the rows' entropy; the edit is stored dense.",
                ),
                io.Boolean.Input(
                    "entropy_blend",
                    default=DEFAULTS.entropy_blend,
                    tooltip="Blend each row back toward the original weights by how evenly it responds to the "
                    "concepts (entropy of its responses): concept-specific rows keep their whole edit.",
                ),
                io.Float.Input(
                    "blend_floor",
                    default=DEFAULTS.blend_floor,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    tooltip="The least share of its edit a row keeps: alpha = floor + (1 - floor) × (1 - entropy). "
                    "1 turns the blend off.",
                ),
                io.String.Input(
                    "preserve",
                    multiline=True,
                    default="",
                    optional=True,
                    tooltip="Optional concepts to keep unchanged, one per line (e.g. neighbours of the erased ones).",
                ),
            ],
            outputs=[
                io.Model.Output(tooltip="A copy of the model with W + scale × delta on every to_k / to_v (patches)."),
                ScaPreEditType.Output(tooltip="The edit itself, for FIA Save ScaPre Edit or FIA Apply ScaPre Edit."),
            ],
        )

    @classmethod
    def execute(
        cls,
        model,
        clip,
        concepts: str,
        anchor: str,
        mode: str,
        scale: float,
        row_mask: bool,
        mask_power: float,
        spectral: bool,
        spectral_rho: float,
        spectral_form: str,
        bures: bool,
        bures_eta: float,
        bures_form: str,
        entropy_blend: bool,
        blend_floor: float,
        preserve: str = "",
    ) -> io.NodeOutput:
        settings = ScaPreSettings(
            mode=mode,
            row_mask=row_mask,
            mask_power=mask_power,
            spectral=spectral,
            spectral_rho=spectral_rho,
            spectral_form=spectral_form,
            bures=bures,
            bures_eta=bures_eta,
            bures_form=bures_form,
            entropy_blend=entropy_blend,
            blend_floor=blend_floor,
        )
        bar = comfy.utils.ProgressBar(1)
        patched, edit = host.erase_with_scapre(
            model,
            clip,
            concepts,
            anchor,
            preserve or "",
            settings,
            scale,
            progress=lambda done, total: bar.update_absolute(done, total),
        )
        return io.NodeOutput(patched, edit, ui=ui(scapre_summary(edit, scale)))


class FIAApplyScaPreEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIAApplyScaPreEdit",
            display_name="FIA Apply ScaPre Edit",
            category="FIA unlearning",
            description=(
                "Returns a copy of the model with a ScaPre edit (e.g. from FIA Load ScaPre Edit) added to its "
                "cross-attention to_k / to_v as compact patches. The input model is not modified. An edit made for "
                "another architecture is refused; for another checkpoint of the same one it applies with a warning."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The model the edit was made for (or a finetune of it)."),
                ScaPreEditType.Input("edit", tooltip="From FIA ScaPre Erase or FIA Load ScaPre Edit."),
                _scale_input(),
            ],
            outputs=[io.Model.Output(tooltip="The edited model.")],
        )

    @classmethod
    def execute(cls, model, edit: ScaPreEdit, scale: float) -> io.NodeOutput:
        return io.NodeOutput(host.apply_scapre_edit(model, edit, scale), ui=ui(scapre_summary(edit, scale)))
