"""Collection on a real (tiny) diffusers UNet: hooks leave no trace, results are reproducible."""

import pytest
import torch

from fia_engine import GroupPlan, InvalidInputError, SaliencyCollector, find_target_layers
from fia_engine.diffusers_runner import CollectionSettings, collect_saliency, load_components
from fia_engine.prompts import build_prompt_plan


def unet_output(unet):
    generator = torch.Generator().manual_seed(7)
    sample = torch.randn(2, 4, 16, 16, generator=generator)
    context = torch.randn(2, 12, 32, generator=generator)
    with torch.no_grad():
        return unet(sample, 500, encoder_hidden_states=context).sample


def no_hooks_left(unet) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in unet.modules())


SMALL = dict(pairs=3, steps=10, saliency_steps=3)


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_outputs_bit_identical_after_collection(tiny_pipeline, mode):
    components = load_components(tiny_pipeline, "cpu")
    before = unet_output(components.unet)
    weights = {k: v.clone() for k, v in components.unet.state_dict().items()}
    collect_saliency(components, ["church", "dog"], CollectionSettings(mode=mode, **SMALL))
    assert torch.equal(before, unet_output(components.unet))
    assert no_hooks_left(components.unet)
    assert all(torch.equal(weights[k], v) for k, v in components.unet.state_dict().items())


def test_hooks_removed_when_the_run_fails(tiny_pipeline):
    components = load_components(tiny_pipeline, "cpu")
    targets = find_target_layers(components.unet)
    collector = SaliencyCollector(targets, GroupPlan(("a",), (0,), (1,)), saliency_steps=1)
    with pytest.raises(InvalidInputError, match="row layout"):
        with collector.attached():
            collector.set_step(0)
            collector.set_rows(torch.tensor([0, 1, 1]))  # 3 rows named, 2 in the batch
            unet_output(components.unet)
    assert no_hooks_left(components.unet)


def test_batching_does_not_change_the_statistics(tiny_pipeline):
    components = load_components(tiny_pipeline, "cpu")
    one = collect_saliency(components, ["church", "dog"], CollectionSettings(batch_size=64, **SMALL))
    many = collect_saliency(components, ["church", "dog"], CollectionSettings(batch_size=2, **SMALL))
    for name, layer in one.layers.items():
        torch.testing.assert_close(
            layer.column_scores, many.layers[name].column_scores, rtol=1e-3, atol=5e-5
        )  # float sums differ with batch shape


def test_base_prompts_are_shared_between_concepts():
    plan = build_prompt_plan(["church", "dog", "golf ball"], "object", pairs=4)
    assert len(plan.samples) == 3 * 4 + 4
    assert set(plan.groups.base_groups) == {3}
    # concept sample k and base sample k share context and noise
    church = [s for s in plan.samples if s.group == 0]
    base = [s for s in plan.samples if s.group == 3]
    assert church[1].text == "a church near the garden" and base[1].text == "a garden"
    assert church[1].noise_index == base[1].noise_index == 1


def test_fp16_model_keeps_its_dtype_and_accumulates_in_fp32(tiny_pipeline):
    components = load_components(tiny_pipeline, "cpu", dtype=torch.bfloat16)
    saliency = collect_saliency(components, ["church"], CollectionSettings(**SMALL))
    assert components.dtype == torch.bfloat16
    layer = next(iter(saliency.layers.values()))
    assert layer.column_scores.dtype == torch.float32
    assert layer.weight_abs.dtype == torch.bfloat16


def test_euler_sampler_chunks_like_one_batch(tiny_pipeline):
    """Euler counts its steps: every row chunk needs its own scheduler for the chunks to agree."""
    components = load_components(tiny_pipeline, "cpu")
    settings = dict(SMALL, sampler="euler")
    one = collect_saliency(components, ["church"], CollectionSettings(batch_size=64, **settings))
    many = collect_saliency(components, ["church"], CollectionSettings(batch_size=1, **settings))
    for name, layer in one.layers.items():
        # Batch 64 and batch 1 run other CPU kernels (which ones depends on the CPU): rounding
        # differs by up to ~1e-4 of a layer's largest score; a step counted twice moves scores by far more.
        scale = float(layer.column_scores.abs().max())
        torch.testing.assert_close(layer.column_scores, many.layers[name].column_scores, rtol=1e-3, atol=1e-3 * scale)


def test_comfy_normal_sigmas_span_the_training_table():
    from fia_engine.diffusers_runner import comfy_normal_sigmas

    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas = torch.cumprod(1 - betas, 0)
    table = ((1 - alphas) / alphas) ** 0.5
    sigmas = comfy_normal_sigmas(alphas, 50)
    assert len(sigmas) == 51 and sigmas[-1] == 0.0
    assert sigmas[0] == pytest.approx(float(table[-1])) and sigmas[-2] == pytest.approx(float(table[0]))
    assert all(a > b for a, b in zip(sigmas, sigmas[1:], strict=False))
    # between table entries the interpolation is geometric: at t = 999 * 48/49 (between 978 and 979)
    t = 999 * 48 / 49
    low, w = int(t), t - int(t)
    assert sigmas[1] == pytest.approx(float(table[low] ** (1 - w) * table[low + 1] ** w))


def test_kept_contrast_terms_give_the_column_scores_and_are_off_by_default(tiny_pipeline):
    components = load_components(tiny_pipeline, "cpu")
    plain = collect_saliency(components, ["church", "dog"], CollectionSettings(**SMALL))
    kept = collect_saliency(components, ["church", "dog"], CollectionSettings(**SMALL), keep_contrast=True)
    for name, layer in kept.layers.items():
        assert plain.layers[name].contrast is None
        c = layer.contrast
        assert c.concept_mean.shape == c.base_mean.shape == c.base_std.shape == layer.column_scores.shape
        assert bool((c.base_std >= 0).all())
        assert torch.equal((c.concept_mean - c.base_mean - c.base_std).clamp(min=0), layer.column_scores)
        assert torch.equal(layer.column_scores, plain.layers[name].column_scores)
    exact = collect_saliency(components, ["church"], CollectionSettings(mode="exact", **SMALL), keep_contrast=True)
    assert all(layer.contrast is None for layer in exact.layers.values())
