"""The committed model folder: loads, has FIA's target layers, matches its checksums, samples
deterministically."""

import json

import torch
from torch import nn

from bench.digits import MODEL_DIR
from bench.digits.export import read_checksums, verify_checksums
from bench.digits.sampling import generate, load_components, sample_pairs


def test_checksums_match():
    listed = read_checksums(MODEL_DIR)
    assert "unet/diffusion_pytorch_model.safetensors" in listed
    assert "text_encoder/model.safetensors" in listed
    assert verify_checksums(MODEL_DIR) == []


def test_model_index_says_pixel_space():
    index = json.loads((MODEL_DIR / "model_index.json").read_text())
    assert index["fia_pixel_space"] is True
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]


def test_folder_loads_with_ffn2_layers():
    unet, text_encoder, tokenizer, _ = load_components(MODEL_DIR)
    ffn2 = {n: m for n, m in unet.named_modules() if n.endswith("transformer_blocks.0.ff.net.2")}
    assert len(ffn2) >= 3
    for layer in ffn2.values():
        assert isinstance(layer, nn.Linear)
        assert layer.in_features == 4 * layer.out_features
    assert unet.config.cross_attention_dim == text_encoder.config.hidden_size
    assert text_encoder.config.vocab_size == len(tokenizer)


def test_sampling_is_deterministic_and_batch_free():
    components = load_components(MODEL_DIR)
    a = generate(components, ["a handwritten seven"], 3, seed=5, steps=4)
    b = generate(components, ["a handwritten seven"], 3, seed=5, steps=4, batch_size=2)
    assert a.shape == (3, 1, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, generate(components, ["a handwritten seven"], 3, seed=5, steps=4))
    # Other batch sizes pick other CPU kernels: equal up to float rounding only, which four
    # sampling steps amplify to ~1e-3 of the [-1, 1] range on some CPUs (AVX-512 ones).
    assert torch.allclose(a, b, atol=5e-3)
    # Noise j does not depend on how many images are drawn.
    c = sample_pairs(components, ["a handwritten seven"], [2], seed=5, steps=4)
    assert torch.allclose(a[2], c[0], atol=1e-3)
    d = generate(components, ["a handwritten seven"], 3, seed=6, steps=4)
    assert not torch.allclose(a, d)
