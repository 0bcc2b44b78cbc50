"""FIAAgnosticFusion: merge concept masks, sparing weights that many concepts share."""

from __future__ import annotations

from comfy_api.latest import io

from ..fia_engine.fusion import fuse
from .summary import mask_summary, ui
from .types import ConceptMasks, Mask


class FIAAgnosticFusion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIAAgnosticFusion",
            display_name="FIA Agnostic Fusion",
            category="FIA unlearning",
            description=(
                "Merges the concept masks of one or more localizers (stage 3). A weight selected for at least "
                "max(2, ceil(alpha x concepts)) concepts is concept-agnostic and kept; the other selected weights are "
                "pruned. One concept prunes its whole set."
            ),
            inputs=[
                ConceptMasks.Input("concept_masks", tooltip="From FIA Neuron Localizer."),
                ConceptMasks.Input("concept_masks_2", optional=True, tooltip="More concepts of the same model."),
                ConceptMasks.Input("concept_masks_3", optional=True, tooltip="More concepts of the same model."),
                ConceptMasks.Input("concept_masks_4", optional=True, tooltip="More concepts of the same model."),
                io.Float.Input(
                    "alpha",
                    default=0.6,
                    min=0.01,
                    max=1.0,
                    step=0.01,
                    tooltip="Agnostic threshold as a fraction of the concepts (paper: 0.6 objects and "
                    "explicit, 0.8 styles).",
                ),
                io.Boolean.Input(
                    "protect_agnostic",
                    default=True,
                    tooltip="Off: prune the plain union of all concept masks (no sparing).",
                ),
            ],
            outputs=[Mask.Output(tooltip="The weights to prune, with metadata; save it or apply it.")],
        )

    @classmethod
    def execute(
        cls,
        concept_masks,
        alpha: float,
        protect_agnostic: bool,
        concept_masks_2=None,
        concept_masks_3=None,
        concept_masks_4=None,
    ) -> io.NodeOutput:
        inputs = [m for m in (concept_masks, concept_masks_2, concept_masks_3, concept_masks_4) if m is not None]
        mask = fuse(inputs, alpha, protect_agnostic)
        return io.NodeOutput(mask, ui=ui(mask_summary(mask)))
