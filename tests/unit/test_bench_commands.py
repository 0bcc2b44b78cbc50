"""Every benchmark command starts, and the cheap ones run at toy sizes, with what pyproject.toml
declares: a package used by a benchmark but missing from its extra cannot hide again.

Commands are run as ``python -m`` runs them (runpy, ``__main__``), in this process so that
torch is imported once; the whole file takes about half a minute on one core.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

# Modules run here were often imported already by an earlier command (bench.gpu imports bench.speed).
pytestmark = pytest.mark.filterwarnings("ignore:.*found in sys.modules after import of package:RuntimeWarning")

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ["bench.speed", "bench.scapre_scale", "bench.gpu", "bench.localize", "bench.pipelines", "bench.digits"]


def run_command(module: str, *argv: str) -> int:
    """``python -m module argv...`` in this process; the exit code."""
    saved = sys.argv
    sys.argv = [module, *argv]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        sys.argv = saved
    return 0


def declared_distributions() -> set[str]:
    """The distributions the package, its diffusers extra and its bench extra name."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = list(project["dependencies"])
    for extra in ("diffusers", "bench"):
        names += project["optional-dependencies"][extra]
    found = {re.split(r"[<>=!~\[; ]", name, maxsplit=1)[0] for name in names}
    return {name.lower().replace("_", "-") for name in found if name != "forget-it-all"}


def imported_top_modules(folder: Path) -> set[str]:
    modules = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"bench", "fia_engine", "__future__"}


def test_every_package_a_benchmark_imports_is_declared():
    providers = importlib.metadata.packages_distributions()
    declared = declared_distributions()
    missing = {}
    for module in sorted(imported_top_modules(REPO / "bench")):
        distributions = {d.lower().replace("_", "-") for d in providers.get(module, [module])}
        if not distributions & declared:
            missing[module] = sorted(distributions)
    assert not missing, f"imported by bench/ but not declared in pyproject.toml's bench extra: {missing}"


@pytest.mark.parametrize("module", COMMANDS)
def test_help_of_every_command(module, capsys):
    assert run_command(module, "--help") == 0
    assert "usage" in capsys.readouterr().out


def test_help_of_every_digits_subcommand(capsys):
    from bench.digits.__main__ import _parser

    choices = next(a for a in _parser()._actions if hasattr(a, "choices") and isinstance(a.choices, dict)).choices
    assert {"demo", "benchmark", "train", "generate"} <= set(choices)
    for name in choices:
        assert run_command("bench.digits", name, "--help") == 0, name
        assert "usage" in capsys.readouterr().out


def test_speed_runs_at_a_toy_size(capsys):
    argv = ["--arch", "small", "--concepts", "1", "--pairs", "1", "--saliency-steps", "1", "--repeats", "1"]
    assert run_command("bench.speed", *argv, "--resolution", "32", "--device", "cpu") == 0
    table = capsys.readouterr().out
    assert "| small | fast | 1 |" in table and "| small | exact | 1 |" in table


def test_localize_runs_at_a_toy_size(capsys):
    argv = ["--arch", "small", "--concepts", "2", "--saliency-steps", "1", "--resolution", "32", "--device", "cpu"]
    assert run_command("bench.localize", *argv) == 0
    assert "| localise, first run (r2 0.01) |" in capsys.readouterr().out


def test_scapre_scale_runs_at_a_toy_size(capsys):
    assert run_command("bench.scapre_scale", "--tiny", "--concepts", "2", "--repeats", "1", "--device", "cpu") == 0
    assert "scapre" in capsys.readouterr().out


def test_gpu_check_runs_at_a_toy_size_on_the_cpu(tmp_path, capsys):
    assert run_command("bench.gpu", "--tiny", "--device", "cpu", "--work", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "| CLI unlearn, 2 concepts, whole process |" in out
    assert "| exact, 1 concept: floor ratio |" in out and "| ScaPre, 2 concepts" in out
    assert "skipped" not in out and "FAILED" not in out


def test_gpu_check_script_starts(tmp_path):
    """bench/gpu_check.sh (what the GPU machine runs) reaches bench.gpu; here diffusers is installed."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])  # python3: this one
    env = {**os.environ, "OUT": str(tmp_path), "PATH": path}
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), "--help"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout and (tmp_path / "bench_gpu.log").is_file()


def test_a_digits_command_runs(tmp_path, capsys):
    argv = ["generate", "--prompt", "a handwritten digit zero", "--n", "1", "--steps", "2", "--out", str(tmp_path)]
    assert run_command("bench.digits", *argv) == 0
    assert list(tmp_path.glob("*.png"))
