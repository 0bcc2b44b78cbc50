from pathlib import Path

import pytest

from fia_engine.testing import make_tiny_pipeline


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    """A random diffusers SD-layout folder, made once per test session."""
    return make_tiny_pipeline(tmp_path_factory.mktemp("pipelines") / "tiny")


@pytest.fixture(scope="session")
def other_pipeline(tmp_path_factory) -> Path:
    """Same architecture, other random weights (another checkpoint)."""
    return make_tiny_pipeline(tmp_path_factory.mktemp("pipelines") / "tiny-other", seed=1)
