"""Fixtures that run a real ComfyUI in-process (CPU) for the integration tests.

Every test here needs COMFYUI_PATH; without it (or when it names no ComfyUI
tree) each test is skipped with the reason. See README.md beside this file.

Fixtures:
  comfy          the booted ComfyHost (comfy_host.py): load_pack, run_prompt,
                 workflow_to_prompt, add_model_folder, node_class
  fia_pack       the node ids this repository's pack registered (loads the repo root)
  sd15_ckpt      file name of a random SD 1.5 checkpoint, registered under "checkpoints"
  sd15           (model, clip, vae) of that checkpoint, loaded once per test module
  random_ckpt    factory: random_ckpt("sd2-v" | "sd2-eps" | "sdxl" | "sd15") -> file name
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
if str(HERE) not in sys.path:  # also under --import-mode=importlib
    sys.path.insert(0, str(HERE))

import comfy_host  # noqa: E402  (needs HERE on sys.path first)


def checkpoint_cache() -> Path:
    """Where random checkpoints are kept between runs: FIA_TEST_CACHE, else ~/.cache/fia-tests."""
    return Path(os.environ.get("FIA_TEST_CACHE", Path.home() / ".cache" / "fia-tests"))


@pytest.fixture(scope="session")
def comfy(tmp_path_factory) -> comfy_host.ComfyHost:
    try:
        comfy_host.comfyui_path()
    except comfy_host.ComfyUnavailable as why:
        pytest.skip(str(why))
    return comfy_host.boot(tmp_path_factory.mktemp("comfyui-base"))


@pytest.fixture(scope="session")
def fia_pack(comfy) -> list[str]:
    if not (REPO_ROOT / "__init__.py").is_file():  # the pack's entry point: its absence is a bug, not a skip
        pytest.fail(f"the node pack's entry point {REPO_ROOT / '__init__.py'} is missing")
    return comfy.load_pack(REPO_ROOT)


@pytest.fixture(scope="session")
def random_ckpt(comfy):
    """Factory: a random checkpoint of the given kind, made on first use and cached on disk."""
    import comfy_checkpoints

    cache = checkpoint_cache()
    comfy.add_model_folder("checkpoints", cache)

    def make(kind: str, seed: int = 0) -> str:
        return comfy_checkpoints.random_checkpoint(kind, cache, seed).name

    return make


@pytest.fixture(scope="session")
def sd15_ckpt(random_ckpt) -> str:
    return random_ckpt("sd15")


@pytest.fixture(scope="module")
def sd15(comfy, sd15_ckpt):
    """(model, clip, vae) of the random SD 1.5 checkpoint, loaded once per test module."""
    import folder_paths
    from comfy import sd as comfy_sd  # keeps the `comfy` fixture name unshadowed

    path = folder_paths.get_full_path_or_raise("checkpoints", sd15_ckpt)
    model, clip, vae, _ = comfy_sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True)
    return model, clip, vae
