"""Output path checks and atomic writes (fia_engine.output_paths)."""

import stat

import pytest

from fia_engine.errors import InvalidInputError, OutputPathError
from fia_engine.output_paths import (
    atomic_dir,
    atomic_file,
    check_output_dir,
    check_output_file,
    write_text_atomic,
)


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_new_file_in_a_new_folder_is_fine(tmp_path):
    out = tmp_path / "a" / "b" / "mask.safetensors"
    assert check_output_file(out, overwrite=False) == out
    assert listing(tmp_path) == []  # the check creates nothing


@pytest.mark.parametrize(
    "case, message",
    [
        ("exists", "already exists; pass --overwrite"),
        ("folder", "is a folder"),
        ("under_file", "which is a file, not a folder"),
        ("missing_parent", "does not exist"),
    ],
)
def test_refused_output_files(tmp_path, case, message):
    (tmp_path / "file.txt").write_text("old")
    (tmp_path / "folder").mkdir()
    path = {
        "exists": tmp_path / "file.txt",
        "folder": tmp_path / "folder",
        "under_file": tmp_path / "file.txt" / "x.safetensors",
        "missing_parent": tmp_path / "nowhere" / "x.safetensors",
    }[case]
    with pytest.raises(OutputPathError, match=message) as raised:
        check_output_file(path, overwrite=False, make_parents=case != "missing_parent")
    assert isinstance(raised.value, InvalidInputError)
    assert "\n" not in str(raised.value)
    assert listing(tmp_path) == ["file.txt", "folder"]


def test_overwrite_allows_an_existing_file_but_not_a_read_only_one(tmp_path):
    out = tmp_path / "old.safetensors"
    out.write_text("old")
    assert check_output_file(out, overwrite=True) == out
    out.chmod(0o444)
    with pytest.raises(OutputPathError, match="read-only"):
        check_output_file(out, overwrite=True)


def test_read_only_folders_are_refused(read_only_dir):
    with pytest.raises(OutputPathError, match="cannot write in"):
        check_output_file(read_only_dir / "x.safetensors", overwrite=False)
    with pytest.raises(OutputPathError, match="cannot write in"):
        check_output_file(read_only_dir / "deeper" / "x.safetensors", overwrite=False)
    with pytest.raises(OutputPathError, match="cannot write in"):
        check_output_dir(read_only_dir / "copy", exist_ok=False)
    with pytest.raises(OutputPathError, match="cannot write in"):
        check_output_dir(read_only_dir, exist_ok=True)
    assert listing(read_only_dir) == ["kept.txt"]


def test_output_folders(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "existing").mkdir()
    assert check_output_dir(tmp_path / "new" / "copy", exist_ok=False) == tmp_path / "new" / "copy"
    assert check_output_dir(tmp_path / "existing", exist_ok=True) == tmp_path / "existing"
    with pytest.raises(OutputPathError, match="already exists"):
        check_output_dir(tmp_path / "existing", exist_ok=False)
    with pytest.raises(OutputPathError, match="is a file"):
        check_output_dir(tmp_path / "file.txt", exist_ok=True)
    with pytest.raises(OutputPathError, match="which is a file"):
        check_output_dir(tmp_path / "file.txt" / "copy", exist_ok=True)
    assert listing(tmp_path) == ["existing", "file.txt"]


def test_atomic_file_replaces_on_success_with_ordinary_permissions(tmp_path):
    out = tmp_path / "sub" / "report.md"
    write_text_atomic(out, "one")
    assert out.read_text() == "one"
    assert stat.S_IMODE(out.stat().st_mode) & 0o044  # readable by others, unlike a bare mkstemp file
    with atomic_file(out) as tmp:
        assert tmp.parent == out.parent and tmp.suffix == ".md"
        tmp.write_text("two")
        assert out.read_text() == "one"  # not visible before the end
    assert out.read_text() == "two"
    assert listing(tmp_path) == ["sub", "sub/report.md"]


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_atomic_file_leaves_nothing_on_failure(tmp_path, failure):
    old = tmp_path / "old.txt"
    old.write_text("old")
    with pytest.raises(failure):
        with atomic_file(old) as tmp:
            tmp.write_text("half")
            raise failure()
    with pytest.raises(failure):
        with atomic_file(tmp_path / "new" / "deeper" / "x.txt") as tmp:
            tmp.write_text("half")
            raise failure()
    assert listing(tmp_path) == ["old.txt"]
    assert old.read_text() == "old"


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_atomic_dir(tmp_path, failure):
    with pytest.raises(failure):
        with atomic_dir(tmp_path / "a" / "copy") as staging:
            (staging / "half.txt").write_text("half")
            raise failure()
    assert listing(tmp_path) == []
    with atomic_dir(tmp_path / "a" / "copy") as staging:
        (staging / "whole.txt").write_text("whole")
    assert listing(tmp_path) == ["a", "a/copy", "a/copy/whole.txt"]
    assert stat.S_IMODE((tmp_path / "a" / "copy").stat().st_mode) & 0o055
