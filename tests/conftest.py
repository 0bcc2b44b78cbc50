import subprocess
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


def _writable(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    probe.unlink()
    return True


@pytest.fixture
def read_only_dir(tmp_path) -> Path:
    """A folder nobody can write in. Permission bits do not stop root, so as root the
    folder is also made immutable (chattr +i); the flags are undone afterwards."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    (folder / "kept.txt").write_text("kept")
    folder.chmod(0o555)
    immutable = False
    if _writable(folder):
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    if _writable(folder):
        folder.chmod(0o755)
        pytest.skip("cannot make a read-only folder here (root without chattr)")
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)
