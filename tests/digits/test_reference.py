"""The reference row of the FIA authors' code: its pipeline adapter, the mask it hands over, its refusals.

The release itself is not in this repository. A stand-in release (a few lines written here with
the same function names) checks how its masks are read back; `FIA_RELEASE_PATH` pointing at a
fetched copy of github.com/kaiyuan02415/Forget-It-All runs the real code on the model as well.
"""

import os
import sys
import textwrap

import pytest
import torch
from diffusers.models.activations import GEGLU

from bench.digits import MODEL_DIR
from bench.digits.__main__ import main
from bench.digits.data import CONTEXTS
from bench.digits.model import to_image
from bench.digits.reference import (
    PipelineAdapter,
    ReleaseSettings,
    ReleaseVariant,
    digit_prompts,
    load_release,
    release_mask,
)
from bench.digits.sampling import generate, load_components
from bench.digits.unlearning import FiaSettings
from fia_engine import find_target_layers
from fia_engine.errors import InvalidInputError


@pytest.fixture(scope="module")
def components():
    return load_components(MODEL_DIR)


@pytest.fixture
def no_fia_package(monkeypatch):
    """Each test imports its own `fia`; none of them leaks into the next."""
    for name in [n for n in sys.modules if n == "fia" or n.startswith("fia.")]:
        monkeypatch.delitem(sys.modules, name)
    yield
    for name in [n for n in sys.modules if n == "fia" or n.startswith("fia.")]:
        del sys.modules[name]


def test_adapter_with_the_engine_sampler_draws_what_the_benchmark_draws(components):
    prompt = "a handwritten seven"
    adapter = PipelineAdapter(components, ReleaseVariant(guidance=2.0, sampler="engine"))
    torch.manual_seed(4)  # the benchmark's noise j=0 of seed 4 is the first draw of a generator seeded 4
    latents = adapter(prompt, num_inference_steps=3, guidance_scale=7.5)  # the variant's guidance wins
    expected = generate(components, [prompt], 1, 4, steps=3, cfg=2.0)
    assert torch.allclose(to_image(latents).clamp(-1, 1), expected, atol=1e-4)
    torch.manual_seed(4)
    at_release_guidance = PipelineAdapter(components, ReleaseVariant(sampler="engine"))(prompt, 3, 7.5)
    assert not torch.allclose(at_release_guidance, latents, atol=1e-3)


def test_release_sampling_follows_the_global_seed(components):
    adapter = PipelineAdapter(components, ReleaseVariant())
    runs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        runs.append(adapter("a handwritten two in the center", num_inference_steps=4))
    assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[0], runs[2])


def test_conditional_rows_only_hides_the_unconditional_rows_from_hooks(components):
    seen = []
    geglu = next(m for n, m in components.unet.named_modules() if isinstance(m, GEGLU))
    handle = geglu.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    try:
        outputs = {}
        for only in (False, True):
            seen.clear()
            torch.manual_seed(0)
            adapter = PipelineAdapter(components, ReleaseVariant(conditional_rows_only=only, sampler="engine"))
            outputs[only] = adapter("a handwritten five in the middle", num_inference_steps=3)
            outputs[only, "batches"] = set(seen)
    finally:
        handle.remove()
    assert outputs[False, "batches"] == {2} and outputs[True, "batches"] == {1}
    # same arithmetic in batches of 1 and 2: CPU kernels round differently (~2e-4 here, x 7.5 guidance)
    assert torch.allclose(outputs[False], outputs[True], atol=5e-3)


def test_noise_per_pair_gives_concept_and_base_prompt_one_seed(components):
    adapter = PipelineAdapter(components, ReleaseVariant(noise_per_pair=True, sampler="engine"), noise_seed=3)
    concept, base = digit_prompts("four", pairs=3)
    seeds = []
    for c, b in zip(concept, base, strict=True):
        adapter(c, num_inference_steps=1)
        after_concept = torch.initial_seed()
        adapter(b, num_inference_steps=1)
        assert torch.initial_seed() == after_concept
        seeds.append(after_concept)
    assert seeds == [3000, 3001, 3002]
    with pytest.raises(ValueError, match="no benchmark context"):
        adapter("a handwritten four", num_inference_steps=1)


STAND_IN = {
    "__init__.py": "",
    "hooks.py": "",
    "utils.py": """
        import torch

        class FIAConfig:
            def __init__(self, **fields):
                self.__dict__.update(fields)

        def ffn2_layers(unet):
            # reversed on purpose: the adapter must map layers by module, not by position
            found = [(n, m) for n, m in unet.named_modules() if isinstance(m, torch.nn.Linear) and n.endswith("ff.net.2")]
            return sorted(found, key=lambda kv: kv[0], reverse=True)
    """,
    "saliency.py": """
        from fia.utils import ffn2_layers

        def compute_concept_saliency(pipe, concept_prompts, base_prompts, cfg):
            pipe(concept_prompts[0], num_inference_steps=cfg.inference_steps, guidance_scale=7.5, output_type="latent")
            return ffn2_layers(pipe.unet)
    """,
    "neurons.py": """
        import torch

        def build_concept_mask(layers, cfg):
            masks = []
            for position, (name, module) in enumerate(layers):
                mask = torch.zeros_like(module.weight, dtype=torch.bool)
                mask.view(-1)[: position + 1] = True
                masks.append(mask)
            return masks
    """,
    "mask_fusion.py": """
        def fuse_masks(per_concept_masks, alpha):
            return per_concept_masks[0], {"overall_pruned_ratio": 0.0}
    """,
}


def _write_stand_in(folder):
    (folder / "fia").mkdir(parents=True)
    for name, text in STAND_IN.items():
        (folder / "fia" / name).write_text(textwrap.dedent(text))
    return folder


def test_the_release_mask_is_read_back_by_module_not_by_position(tmp_path, components, no_fia_package):
    release = load_release(_write_stand_in(tmp_path / "release"))
    settings = ReleaseSettings(FiaSettings(steps=2, saliency_steps=1, pairs=1))
    mask, _ = release_mask(release, components, ["zero"], settings)
    ordered = release["utils"].ffn2_layers(components.unet)
    canonical = {id(t.module): t.canonical for t in find_target_layers(components.unet)}
    assert len(ordered) == len(canonical) == 14
    for position, (_, module) in enumerate(ordered):
        assert mask.indices[canonical[id(module)]].tolist() == list(range(position + 1))
    assert mask.metadata["method"].startswith("FIA authors' release")
    assert "fia" in sys.modules and release["saliency"].tqdm.tqdm([1, 2]) == [1, 2]


def test_refusals_are_one_line(tmp_path, capsys, no_fia_package):
    assert main(["reference", str(tmp_path)]) == 2
    assert main(["reference", str(tmp_path), "--pairs", "11"]) == 2
    with pytest.raises(SystemExit) as refused:  # argparse's own refusal, one line too
        main(["reference", str(tmp_path), "--r2", "2"])
    assert refused.value.code == 2
    broken = _write_stand_in(tmp_path / "broken")
    (broken / "fia" / "neurons.py").write_text("import a_package_nobody_has\n")
    assert main(["reference", str(broken)]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert not any("Traceback" in line for line in err)
    assert any("not a folder of the FIA authors' release" in line for line in err)
    assert any("--pairs must be between 1 and 10" in line for line in err)
    assert any("a_package_nobody_has" in line for line in err)


def test_a_second_fia_package_is_refused(tmp_path, no_fia_package):
    load_release(_write_stand_in(tmp_path / "one"))
    with pytest.raises(InvalidInputError, match="another package named 'fia'"):
        load_release(_write_stand_in(tmp_path / "two"))


@pytest.mark.skipif(not os.environ.get("FIA_RELEASE_PATH"), reason="set FIA_RELEASE_PATH to a fetched FIA release")
def test_the_real_release_runs_on_the_model(components, no_fia_package):
    release = load_release(os.environ["FIA_RELEASE_PATH"])
    settings = ReleaseSettings(FiaSettings(steps=4, saliency_steps=2, pairs=2))
    mask, _ = release_mask(release, components, ["zero", "one", "two"], settings)
    # r2 = 1 % per concept and layer; alpha 0.6 of 3 keeps entries two concepts share
    assert 0.001 < mask.pruned_fraction < 0.04
    assert len(mask.indices) == 14 and CONTEXTS[0] in digit_prompts("zero", 1)[0][0]


def test_the_run_judges_every_row_and_measures_overlap_with_the_release(tmp_path, no_fia_package):
    from bench.digits.reference_bench import report, run_reference
    from bench.digits.unlearning import DigitsBench

    release = load_release(_write_stand_in(tmp_path / "release"))
    bench = DigitsBench(MODEL_DIR, images_per_digit=1, seeds=(0,), sample_steps=1)
    settings = ReleaseSettings(FiaSettings(steps=2, saliency_steps=1, pairs=1))
    run, theirs = run_reference(bench, release, settings, differences=True)
    names = [row.name for row in run.rows]
    assert names[0] == "FIA authors' code" and len(names) == 6 + 3
    assert run.rows[0].iou_with_release is None
    # the stand-in ignores the pipeline, so every variant of it returns its one mask
    assert all(row.iou_with_release == 1.0 for row in run.rows[1:6])
    assert all(0.0 <= row.iou_with_release < 1.0 for row in run.rows[6:])
    assert sum(layer.a for layer in run.layers) == theirs.pruned_count
    text = report(run)
    assert "| FIA authors' code |" in text and "engine FIA exact, the closest settings" in text
