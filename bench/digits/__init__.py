"""The digits benchmark model: a tiny pixel-space text-to-image diffusion model.

Trained on scikit-learn's real handwritten digits drawn onto a 32x32 canvas with a caption
that names the digit and its context (position, size, stroke). Built from the same parts as
Stable Diffusion (``UNet2DConditionModel`` with GEGLU transformer blocks, a CLIP text
encoder) so that the unlearning engine can be measured on it with a judge classifier.
"""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
MODEL_DIR = PACKAGE_DIR / "model"
