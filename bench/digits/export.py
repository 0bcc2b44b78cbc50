"""Write and verify the diffusers-style model folder (no VAE: the UNet works on packed pixels)."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import diffusers

from fia_engine.diffusers_files import CHECKSUMS, sha256_of

logger = logging.getLogger(__name__)

WEIGHT_SUFFIX = ".safetensors"


def model_index() -> dict:
    return {
        "_class_name": "FIADigitsPipeline",
        "_diffusers_version": diffusers.__version__,
        "fia_pixel_space": True,
        "fia_pixel_pack": 2,
        "fia_sample_size": 32,
        "fia_channels": 1,
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": [None, None],
    }


def save_model(out_dir: Path, unet, text_encoder, tokenizer, scheduler, metadata: dict) -> None:
    """Save every component, the index, training metadata and the weight checksums.

    The UNet is stored in float16 (half the bytes in git); diffusers loads it back as float32,
    and every measurement is made on the loaded folder, i.e. on the rounded weights. The folder
    is written beside ``out_dir`` and swapped in at the end: an interrupted save changes nothing.
    """
    with _replacing(Path(out_dir)) as staging:
        copy.deepcopy(unet).half().save_pretrained(str(staging / "unet"), safe_serialization=True)
        text_encoder.save_pretrained(str(staging / "text_encoder"), safe_serialization=True)
        tokenizer.save_pretrained(str(staging / "tokenizer"))
        scheduler.save_pretrained(str(staging / "scheduler"))
        (staging / "model_index.json").write_text(json.dumps(model_index(), indent=2) + "\n")
        (staging / "training.json").write_text(json.dumps(metadata, indent=2) + "\n")
        write_checksums(staging)
    logger.info("model saved to %s", out_dir)


@contextlib.contextmanager
def _replacing(folder: Path) -> Iterator[Path]:
    """A new folder to fill that then takes the place of ``folder`` (which may exist)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}.", dir=folder.parent) as scratch:
        staging = Path(scratch) / "new"
        staging.mkdir()
        yield staging
        if folder.exists():
            folder.rename(Path(scratch) / "old")  # removed with the scratch folder
        staging.rename(folder)


def weight_files(model_dir: Path) -> list[Path]:
    return sorted(model_dir.rglob(f"*{WEIGHT_SUFFIX}"))


def write_checksums(model_dir: Path) -> None:
    """``sha256sum -c`` compatible list of the weight files, paths relative to the folder."""
    lines = [f"{sha256_of(p)}  {p.relative_to(model_dir).as_posix()}" for p in weight_files(model_dir)]
    (model_dir / CHECKSUMS).write_text("\n".join(lines) + "\n")


def read_checksums(model_dir: Path) -> dict[str, str]:
    entries = {}
    for line in (model_dir / CHECKSUMS).read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            entries[name.strip()] = digest
    return entries


def verify_checksums(model_dir: Path) -> list[str]:
    """Names of weight files whose sha256 differs from SHA256SUMS (or that are missing/unlisted)."""
    listed = read_checksums(model_dir)
    present = {p.relative_to(model_dir).as_posix() for p in weight_files(model_dir)}
    bad = sorted(present ^ set(listed))
    for name in sorted(present & set(listed)):
        if sha256_of(model_dir / name) != listed[name]:
            bad.append(name)
    return bad
