"""FIAMaskReport: a picture of what a mask prunes, per layer."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from .chart import mask_chart
from .summary import mask_summary, ui
from .types import Mask


class FIAMaskReport(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIAMaskReport",
            display_name="FIA Mask Report",
            category="FIA unlearning",
            description="Draws the pruned fraction of every layer with a summary (concepts, pruned %, agnostic kept).",
            inputs=[Mask.Input("mask", tooltip="The mask to show.")],
            outputs=[io.Image.Output(tooltip="The chart, to preview or save like any image.")],
        )

    @classmethod
    def execute(cls, mask) -> io.NodeOutput:
        summary = mask_summary(mask)
        image = torch.from_numpy(mask_chart(summary)).unsqueeze(0)
        return io.NodeOutput(image, ui=ui(summary))
