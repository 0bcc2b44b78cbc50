"""FIAApplyMask: a clone of the model with the mask's weights pruned, as sparse patches."""

from __future__ import annotations

from comfy_api.latest import io

from . import host
from .summary import mask_summary, ui
from .types import Mask


class FIAApplyMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIAApplyMask",
            display_name="FIA Apply Mask",
            category="FIA unlearning",
            description=(
                "Returns a copy of the model with the mask's weights pruned. The input model is not modified: bypass "
                "or remove this node and the original model is back. The patch stores only the pruned indices."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The model the mask was made for (or a finetune of it)."),
                Mask.Input("mask", tooltip="From FIA Agnostic Fusion or FIA Load Mask."),
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="1 zeroes the pruned weights; lower values scale them by (1 - strength).",
                ),
            ],
            outputs=[io.Model.Output(tooltip="The unlearned model.")],
        )

    @classmethod
    def execute(cls, model, mask, strength: float) -> io.NodeOutput:
        return io.NodeOutput(host.apply_mask(model, mask, strength), ui=ui(mask_summary(mask)))
