import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import make_tiny_pipeline  # noqa: E402


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    """A random diffusers SD-layout folder, made once per test session."""
    return make_tiny_pipeline(tmp_path_factory.mktemp("pipelines") / "tiny")


@pytest.fixture(scope="session")
def other_pipeline(tmp_path_factory) -> Path:
    """Same architecture, other random weights (another checkpoint)."""
    return make_tiny_pipeline(tmp_path_factory.mktemp("pipelines") / "tiny-other", seed=1)
