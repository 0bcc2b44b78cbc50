from pathlib import Path

import pytest

from fia_engine.cli import main


@pytest.fixture(scope="session")
def edit_file(tiny_pipeline, tmp_path_factory) -> Path:
    """A ScaPre edit of the tiny pipeline made by the CLI: two concepts, two preserved."""
    out = tmp_path_factory.mktemp("edits") / "golf-church.safetensors"
    args = ["scapre", "--pipeline", str(tiny_pipeline), "--concepts", "golf ball, church", "--preserve", "dog, cat"]
    assert main([*args, "--out", str(out), "--device", "cpu"]) == 0
    return out
