"""Bad input to every command line ends in exit code 2, one ``error:`` line and no leftovers.

The table runs each case in-process (fast: every case fails before any model is loaded);
a few cases run again as real ``python -m`` processes, and a real SIGINT is sent to running
processes at two moments. "No leftovers": the test's folder (outputs, the read-only folder),
the pipeline and the mask and edit files are byte for byte what they were before.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import bench.scapre_scale
import bench.speed
from bench.digits.__main__ import main as digits_main
from fia_engine.cli import main as fia_main

REPO = Path(__file__).resolve().parents[2]
FAST = ["--pairs", "2", "--steps", "6", "--saliency-steps", "2", "--r2", "0.05"]
MAINS = {"fia": fia_main, "digits": digits_main, "speed": bench.speed.main, "scale": bench.scapre_scale.main}
MODULES = {"fia": "fia_engine", "digits": "bench.digits", "speed": "bench.speed", "scale": "bench.scapre_scale"}


@dataclass
class Paths:
    """What a case's arguments refer to."""

    pipeline: str
    mask: str
    edit: str
    new: str  # a file name that does not exist yet
    existing: str  # an existing file
    locked: str  # an existing read-only file
    folder: str  # an existing folder
    under_file: str  # a path below the existing file
    read_only: str  # an existing folder nobody may write in


def unlearn(p: Paths, *extra: str) -> list[str]:
    return ["unlearn", "--pipeline", p.pipeline, "--concepts", "dog", *FAST, *extra]


def scapre(p: Paths, *extra: str) -> list[str]:
    return ["scapre", "--pipeline", p.pipeline, "--concepts", "dog", "--preserve", "cat", *extra]


def apply(p: Paths, *extra: str) -> list[str]:
    return ["apply", "--pipeline", p.pipeline, "--mask", p.mask, *extra]


# (cli, id, arguments, words the error line must hold)
CASES = [
    ("fia", "unlearn-out-is-a-folder", lambda p: unlearn(p, "--out", p.folder), "is a folder"),
    ("fia", "unlearn-out-under-a-file", lambda p: unlearn(p, "--out", p.under_file), "which is a file"),
    ("fia", "unlearn-out-read-only", lambda p: unlearn(p, "--out", f"{p.read_only}/m.safetensors"), "cannot write"),
    (
        "fia",
        "unlearn-out-read-only-deeper",
        lambda p: unlearn(p, "--out", f"{p.read_only}/new/m.safetensors"),
        "cannot write",
    ),
    ("fia", "unlearn-out-exists", lambda p: unlearn(p, "--out", p.existing), "already exists; pass --overwrite"),
    ("fia", "unlearn-overwrite-read-only", lambda p: unlearn(p, "--out", p.locked, "--overwrite"), "is read-only"),
    ("fia", "unlearn-cuda-without-gpu", lambda p: unlearn(p, "--out", p.new, "--device", "cuda"), "no CUDA GPU"),
    ("fia", "unlearn-unknown-device", lambda p: unlearn(p, "--out", p.new, "--device", "tpu9"), "unknown device"),
    ("fia", "unlearn-r1", lambda p: unlearn(p, "--out", p.new, "--r1", "1.5"), "r1 must be a fraction in (0, 1]"),
    ("fia", "unlearn-r2", lambda p: unlearn(p, "--out", p.new, "--r2", "0"), "r2 must be a fraction in (0, 1]"),
    ("fia", "unlearn-alpha", lambda p: unlearn(p, "--out", p.new, "--alpha", "-1"), "alpha must be a fraction"),
    (
        "fia",
        "unlearn-r2-per-concept",
        lambda p: unlearn(p, "--out", p.new, "--r2-per-concept", "dog=3"),
        "must be a fraction",
    ),
    ("fia", "scapre-out-is-a-folder", lambda p: scapre(p, "--out", p.folder), "is a folder"),
    ("fia", "scapre-out-under-a-file", lambda p: scapre(p, "--out", p.under_file), "which is a file"),
    ("fia", "scapre-out-read-only", lambda p: scapre(p, "--out", f"{p.read_only}/e.safetensors"), "cannot write"),
    ("fia", "scapre-out-exists", lambda p: scapre(p, "--out", p.existing), "already exists; pass --overwrite"),
    ("fia", "scapre-cuda-without-gpu", lambda p: scapre(p, "--out", p.new, "--device", "cuda"), "no CUDA GPU"),
    ("fia", "scapre-unknown-device", lambda p: scapre(p, "--out", p.new, "--device", "gpu"), "unknown device"),
    ("fia", "scapre-blend-floor", lambda p: scapre(p, "--out", p.new, "--blend-floor", "1.5"), "blend_floor"),
    ("fia", "apply-out-exists", lambda p: apply(p, "--out", p.folder), "already exists"),
    ("fia", "apply-out-is-a-file", lambda p: apply(p, "--out", p.existing), "is a file, not a folder"),
    ("fia", "apply-out-under-a-file", lambda p: apply(p, "--out", p.under_file), "which is a file"),
    ("fia", "apply-out-read-only", lambda p: apply(p, "--out", f"{p.read_only}/copy"), "cannot write"),
    ("fia", "apply-strength", lambda p: apply(p, "--out", p.new, "--strength", "2"), "strength must be between"),
    (
        "fia",
        "apply-edit-scale",
        lambda p: ["apply", "--pipeline", p.pipeline, "--mask", p.edit, "--out", p.new, "--scale", "-1"],
        "scale must be between",
    ),
    ("fia", "info-missing-file", lambda p: ["info", p.new], "file not found"),
    ("digits", "demo-out-is-a-file", lambda p: ["demo", "--out", p.existing], "is a file, not a folder"),
    ("digits", "demo-out-under-a-file", lambda p: ["demo", "--out", p.under_file], "which is a file"),
    ("digits", "demo-out-read-only", lambda p: ["demo", "--out", p.read_only], "cannot write"),
    ("digits", "demo-unknown-digit", lambda p: ["demo", "--forget", "zero, ten", "--out", p.new], "digit words"),
    ("digits", "generate-out-read-only", lambda p: ["generate", "--prompt", "a 1", "--out", p.read_only], "cannot"),
    ("digits", "train-out-under-a-file", lambda p: ["train", "--out", p.under_file], "which is a file"),
    ("digits", "benchmark-r2", lambda p: ["benchmark", "--r2", "2"], "r2 must be a fraction in (0, 1]"),
    ("digits", "benchmark-alpha", lambda p: ["benchmark", "--alpha", "0"], "alpha must be a fraction"),
    ("digits", "benchmark-report-is-a-folder", lambda p: ["benchmark", "--report", p.folder], "is a folder"),
    ("digits", "benchmark-plot-under-a-file", lambda p: ["benchmark", "--plot", p.under_file], "which is a file"),
    ("digits", "benchmark-save-read-only", lambda p: ["benchmark", "--save", p.read_only], "cannot write"),
    ("digits", "report-report-read-only", lambda p: ["report", "--report", f"{p.read_only}/R.md"], "cannot write"),
    ("digits", "report-without-runs", lambda p: ["report"], "give --p1 and/or --p2"),
    (
        "digits",
        "sweep-pairs-report-under-a-file",
        lambda p: ["sweep-pairs", "--report", p.under_file],
        "which is a file",
    ),
    ("digits", "diagnose-fia-r2", lambda p: ["diagnose-fia", "--r2", "0.1", "3"], "r2 must be a fraction"),
    ("digits", "mask-oracle-fia-r2", lambda p: ["mask-oracle", "--fia-r2", "0"], "fia-r2 must be a fraction"),
    ("speed", "speed-cuda-without-gpu", lambda p: ["--device", "cuda"], "no CUDA GPU"),
    ("speed", "speed-unknown-device", lambda p: ["--device", "cuda:x"], "unknown device"),
    ("speed", "speed-report-is-a-folder", lambda p: ["--report", p.folder], "is a folder"),
    ("speed", "speed-report-read-only", lambda p: ["--report", f"{p.read_only}/speed.md"], "cannot write"),
    ("speed", "speed-unknown-mode", lambda p: ["--modes", "slow"], "invalid choice"),
    ("scale", "scapre-scale-cuda-without-gpu", lambda p: ["--device", "cuda"], "no CUDA GPU"),
    ("scale", "scapre-scale-unknown-device", lambda p: ["--device", "npu"], "unknown device"),
    ("scale", "scapre-scale-report-under-a-file", lambda p: ["--report", p.under_file], "which is a file"),
    ("scale", "scapre-scale-report-read-only", lambda p: ["--report", f"{p.read_only}/R.md"], "cannot write"),
]


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under ``roots``, with each file's sha256: what "unchanged" means."""
    seen = {}
    for root in roots:
        for path in [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]:
            seen[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
    return seen


def assert_one_error_line(code, err: str, words: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and "usage:" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert words in lines[0], err


@pytest.fixture(scope="module")
def made_files(tiny_pipeline, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("made")
    mask, edit = folder / "mask.safetensors", folder / "edit.safetensors"
    assert fia_main(unlearn(_paths(tiny_pipeline, mask, edit, folder), "--out", str(mask))) == 0
    assert fia_main(["scapre", "--pipeline", str(tiny_pipeline), "--concepts", "dog", "--out", str(edit)]) == 0
    return mask, edit


def _paths(pipeline: Path, mask: Path, edit: Path, root: Path, read_only: Path | None = None) -> Paths:
    return Paths(
        pipeline=str(pipeline),
        mask=str(mask),
        edit=str(edit),
        new=str(root / "new.safetensors"),
        existing=str(root / "existing.safetensors"),
        locked=str(root / "locked.safetensors"),
        folder=str(root / "folder"),
        under_file=str(root / "existing.safetensors" / "below"),
        read_only=str(read_only or root / "read-only"),
    )


@pytest.fixture
def paths(tiny_pipeline, made_files, tmp_path, read_only_dir) -> Paths:
    mask, edit = made_files
    p = _paths(tiny_pipeline, mask, edit, tmp_path, read_only_dir)
    Path(p.existing).write_text("an older file")
    Path(p.locked).write_text("a read-only file")
    Path(p.locked).chmod(0o444)
    Path(p.folder).mkdir()
    (Path(p.folder) / "kept.txt").write_text("kept")
    return p


@pytest.mark.parametrize("cli, argv, words", [c[:1] + c[2:] for c in CASES], ids=[c[1] for c in CASES])
def test_bad_input_in_process(cli, argv, words, paths, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # "without a GPU", on any machine
    before = snapshot(tmp_path, Path(paths.pipeline), Path(paths.mask), Path(paths.edit))
    try:
        code = MAINS[cli](argv(paths))
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    assert_one_error_line(code, capsys.readouterr().err, words)
    assert snapshot(tmp_path, Path(paths.pipeline), Path(paths.mask), Path(paths.edit)) == before


def test_ctrl_c_while_writing_the_mask_leaves_no_file(paths, tmp_path, capsys, monkeypatch):
    import fia_engine.safetensors_files as files

    def interrupted_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(files, "save_file", interrupted_save)
    before = snapshot(tmp_path)
    code = fia_main(unlearn(paths, "--out", str(tmp_path / "sub" / "m.safetensors")))
    assert_one_error_line(code, capsys.readouterr().err, "interrupted")
    assert snapshot(tmp_path) == before


def test_ctrl_c_while_copying_the_pipeline_leaves_no_folder(paths, tmp_path, capsys, monkeypatch):
    import fia_engine.diffusers_files as folders

    def interrupted_copy(source, target, **kwargs):
        (Path(target) / "half").write_text("copied in part")
        raise KeyboardInterrupt

    monkeypatch.setattr(folders.shutil, "copytree", interrupted_copy)
    before = snapshot(tmp_path)
    code = fia_main(apply(paths, "--out", str(tmp_path / "sub" / "copy")))
    assert_one_error_line(code, capsys.readouterr().err, "interrupted")
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_an_existing_file(paths, capsys):
    assert fia_main(unlearn(paths, "--out", paths.existing, "--overwrite")) == 0
    assert Path(paths.existing).read_bytes()[:8] != b"an older"
    assert capsys.readouterr().err == ""


def test_apply_rewrites_the_checksums_of_the_files_it_changes(paths, tmp_path):
    from bench.digits.export import read_checksums, verify_checksums, write_checksums

    source = tmp_path / "with-sums"
    shutil.copytree(paths.pipeline, source)
    write_checksums(source)
    sums_before = (source / "SHA256SUMS").read_text()
    out = tmp_path / "copy"
    assert fia_main(["apply", "--pipeline", str(source), "--mask", paths.mask, "--out", str(out)]) == 0
    assert verify_checksums(out) == []  # every weight file matches its line
    assert (source / "SHA256SUMS").read_text() == sums_before and verify_checksums(source) == []
    changed = {k for k, v in read_checksums(out).items() if read_checksums(source)[k] != v}
    assert changed == {"unet/diffusion_pytorch_model.safetensors"}


# --- real processes ----------------------------------------------------------------------------


def python_m(module: str, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint, **kwargs,
    )  # fmt: skip


def _default_sigint() -> None:
    # A test run started in the background by a non-interactive shell inherits SIGINT as ignored,
    # and so would the child: Ctrl-C must reach it as it reaches a command typed in a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    "cli, case_id",
    [
        ("fia", "unlearn-r1"),
        ("fia", "scapre-cuda-without-gpu"),
        ("digits", "demo-out-is-a-file"),
        ("speed", "speed-unknown-device"),
        ("scale", "scapre-scale-report-read-only"),
    ],
)
def test_bad_input_as_a_process(cli, case_id, paths, tmp_path):
    _, _, argv, words = next(case for case in CASES if case[1] == case_id)
    before = snapshot(tmp_path)
    process = python_m(MODULES[cli], *argv(paths), stdout=subprocess.DEVNULL)
    _, err = process.communicate(timeout=120)
    assert_one_error_line(process.returncode, err, words)
    assert snapshot(tmp_path) == before


def _wait_for_library(pid: int, name: str, timeout: float = 60) -> None:
    """Until the process has mapped a shared library ``name`` (i.e. it is inside that import)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if name in Path(f"/proc/{pid}/maps").read_text():
            return
        time.sleep(0.01)
    raise AssertionError(f"the process did not load {name} within {timeout} s")


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc to see the import under way")
def test_sigint_while_torch_is_imported(paths, tmp_path):
    out = tmp_path / "m.safetensors"
    process = python_m("fia_engine", *unlearn(paths, "--out", str(out)), stdout=subprocess.PIPE)
    _wait_for_library(process.pid, "libtorch")
    process.send_signal(signal.SIGINT)
    stdout, err = process.communicate(timeout=120)
    assert_one_error_line(process.returncode, err, "interrupted")
    assert stdout == "" and not out.exists()


def test_sigint_while_the_saliency_runs(paths, tmp_path):
    out = tmp_path / "sub" / "m.safetensors"
    before = snapshot(tmp_path)
    slow = ["--pairs", "40", "--steps", "50", "--saliency-steps", "50"]
    args = ["-v", "unlearn", "--pipeline", paths.pipeline, "--concepts", "dog, cat", "--out", str(out), *slow]
    process = python_m("fia_engine", *args, stdout=subprocess.PIPE)
    lines = []
    for line in process.stderr:  # -v logs the start of the collection
        lines.append(line)
        if "FIA saliency:" in line:
            process.send_signal(signal.SIGINT)
            break
    rest, stdout = process.stderr.read(), process.stdout.read()
    process.wait(timeout=120)
    err = "".join(lines) + rest
    assert process.returncode == 2, err
    assert "Traceback" not in err and err.splitlines()[-1] == "error: interrupted", err
    assert [line for line in err.splitlines() if line.startswith("error:")] == ["error: interrupted"]
    assert stdout == "" and snapshot(tmp_path) == before
