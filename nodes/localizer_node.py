"""FIANeuronLocalizer: saliency -> each concept's sensitive weights.

The first run on a collection does the work (seconds on a CPU at SD 1.5's size, with a
progress bar) and leaves it on the saliency; a re-run with another r2 reads it back.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..fia_engine.errors import InvalidInputError
from ..fia_engine.neurons import localize_concepts
from . import host
from .summary import concept_masks_summary, ui
from .types import ConceptMasks, Saliency


def parse_overrides(text: str) -> dict[str, float]:
    """Lines 'concept = 0.02' -> {'concept': 0.02}."""
    overrides = {}
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        name, sep, value = line.rpartition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            overrides[name.strip()] = float(value)
        except ValueError:
            raise InvalidInputError(
                f"per-concept r2 lines must look like 'concept = 0.02', got {line.strip()!r}"
            ) from None
    return overrides


class FIANeuronLocalizer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIANeuronLocalizer",
            display_name="FIA Neuron Localizer",
            category="FIA unlearning",
            description=(
                "Turns saliency into each concept's set of concept-sensitive weights (stage 2): weights that score high "
                "consistently over the saliency steps, top r2 per output row and layer-wide. The first run on a "
                "collection takes seconds (its results are kept with the saliency); change r2 and only this node and "
                "the ones after it run again, in a fraction of a second."
            ),
            inputs=[
                Saliency.Input("saliency", tooltip="From FIA Concept Saliency Collector."),
                io.Float.Input(
                    "r1",
                    default=0.05,
                    min=0.001,
                    max=1.0,
                    step=0.001,
                    tooltip="Per-step top fraction for the consistency count (paper 0.05). Exact-mode "
                    "saliency was integrated with the collector's r1, which must match.",
                ),
                io.Float.Input(
                    "r2",
                    default=0.01,
                    min=0.0001,
                    max=1.0,
                    step=0.0001,
                    tooltip="Fraction of weights selected per concept and layer (paper 0.01; objects 0.007, "
                    "hard objects 0.03, styles 0.02-0.03).",
                ),
                io.String.Input(
                    "r2_per_concept",
                    multiline=True,
                    default="",
                    optional=True,
                    tooltip="Optional overrides, one per line: 'concept = 0.02'.",
                ),
            ],
            outputs=[ConceptMasks.Output(tooltip="Per concept and layer, the sensitive weights.")],
        )

    @classmethod
    def execute(cls, saliency, r1: float, r2: float, r2_per_concept: str = "") -> io.NodeOutput:
        masks = localize_concepts(saliency, r1, r2, parse_overrides(r2_per_concept), progress=host.progress_callback())
        return io.NodeOutput(masks, ui=ui(concept_masks_summary(masks)))
