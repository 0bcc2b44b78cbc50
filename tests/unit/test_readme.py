"""The README's commands and .ci/run must not drift apart."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- ci-test-command.*?-->\s*```bash\n(.*?)```", readme, re.S).group(1).strip()
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci_lines[-1] == block


def test_readme_setup_matches_ci_install():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install torch==2.13.0" in readme and "pip install -q torch==2.13.0" in ci
    assert 'pip install -e ".[test]"' in readme and 'pip install -q -e ".[test]"' in ci


def test_readme_python_example_runs(tiny_pipeline, tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    code = code.replace('"path/to/sd15"', repr(str(tiny_pipeline))).replace('device="cuda"', 'device="cpu"')
    code = code.replace("torch.float16", "torch.float32").replace("pairs=10", "pairs=2, steps=4, saliency_steps=2")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "golf-church.safetensors").is_file()


def test_comfy_requirements_never_touch_torch():
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    names = {line.split(">")[0].split("=")[0].split("<")[0].strip().lower() for line in lines if line}
    assert not names & {"torch", "torchvision", "torchaudio"}


def test_pack_exports_only_the_v3_entrypoint():
    """ComfyUI takes NODE_CLASS_MAPPINGS before comfy_entrypoint: exporting both would hide V3."""
    text = (ROOT / "__init__.py").read_text()
    assert "comfy_entrypoint" in text and "NODE_CLASS_MAPPINGS" not in text.split('"""', 2)[2]
