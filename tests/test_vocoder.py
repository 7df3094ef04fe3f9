"""BigVGAN v1 (16 kHz) and v2 (44.1 kHz): checkpoint layouts, weight-norm fusion, anti-aliasing, errors."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from mmaudio.errors import WrongCheckpointError
from mmaudio.vae.checkpoint_info import describe_contents
from mmaudio.vocoder import (
    BigVGAN,
    BigVGANConfig,
    infer_vocoder_config,
    load_vocoder,
    vocoder_checkpoint_template,
)
from mmaudio.vocoder.antialias import DownSample1d, UpSample1d, kaiser_sinc_filter
from mmaudio.vocoder.snake import Snake, SnakeBeta
from tests.parity.cases import golden_dir, load_manifest

# Small width for CPU tests (the structure, rates and kernels stay those of the real vocoders).
TINY_WIDTH = 64


def tiny_config(mode: str) -> BigVGANConfig:
    return BigVGANConfig.for_mode(mode).with_width(TINY_WIDTH)


def random_vocoder_checkpoint(config: BigVGANConfig, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """A released-file-like checkpoint: ``{"generator": ...}`` with weight_g/weight_v pairs, log-scale snake
    parameters and the stored filters."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = BigVGAN(config)
        fused = module.state_dict()
        conv_keys = {f"{n}.weight" for n, m in module.named_modules()
                     if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))}
        sd: dict[str, torch.Tensor] = {}
        for key, value in fused.items():
            if key in conv_keys:
                prefix = key[: -len(".weight")]
                norms = value.flatten(1).norm(dim=1).view(-1, *([1] * (value.ndim - 1)))
                sd[f"{prefix}.weight_v"] = value * (1.0 + torch.rand(norms.shape))  # direction only matters
                sd[f"{prefix}.weight_g"] = norms.clone()
            elif key.endswith((".alpha", ".beta")):
                sd[key] = 0.2 * torch.randn(value.shape)
            else:
                sd[key] = value.clone()
    return {"generator": sd, "steps": 1}  # type: ignore[dict-item]


def meta_generator(manifest: dict) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v["shape"], device="meta") for k, v in manifest["keys"].items()}


@pytest.mark.parametrize(("manifest_name", "mode", "rate"),
                         [("bigvgan_16k_best_netG.json", "16k", 16000), ("bigvgan_v2_44k.json", "44k", 44100)])
def test_manifest_keys_load_strictly_at_full_size(manifest_name: str, mode: str, rate: int) -> None:
    manifest = load_manifest(manifest_name)
    expected = {k: tuple(v["shape"]) for k, v in manifest["keys"].items()}
    config = BigVGANConfig.for_mode(mode)
    assert vocoder_checkpoint_template(config) == expected
    assert sum(math.prod(s) for s in expected.values()) == manifest["param_count"]
    checkpoint = {"generator": meta_generator(manifest)}
    assert infer_vocoder_config(checkpoint["generator"]) == config
    vocoder = load_vocoder(checkpoint, source=manifest["checkpoint_file"])
    assert vocoder.config == config and vocoder.mode == mode and vocoder.sample_rate == rate
    assert vocoder.conv_pre.weight.device.type == "meta"
    assert (vocoder.conv_post.bias is not None) == (mode == "16k")


def test_shipped_v2_config_is_the_hub_config() -> None:
    config = BigVGANConfig.for_mode("44k")
    assert config.hop_length == 512 and config.sampling_rate == 44100
    assert not config.use_tanh_at_final and not config.use_bias_at_final
    v1 = BigVGANConfig.for_mode("16k")
    assert v1.hop_length == 256 and v1.use_tanh_at_final and v1.use_bias_at_final


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_both_weight_norm_spellings_and_fused_weights_give_the_same_output(mode: str) -> None:
    checkpoint = random_vocoder_checkpoint(tiny_config(mode))
    legacy = checkpoint["generator"]
    renamed = {k.replace(".weight_g", ".parametrizations.weight.original0")
               .replace(".weight_v", ".parametrizations.weight.original1"): v for k, v in legacy.items()}
    mel = torch.randn(1, tiny_config(mode).num_mels, 6, generator=torch.Generator().manual_seed(0))
    a = load_vocoder(checkpoint, source="legacy")
    b = load_vocoder(renamed, source="parametrizations")
    fused = {k: v.clone() for k, v in a.state_dict().items()}
    c = load_vocoder(fused, source="fused")
    with torch.no_grad():
        ya, yb, yc = a(mel), b(mel), c(mel)
    assert torch.equal(ya, yb) and torch.equal(ya, yc)
    # Fusion: g · v / ||v|| per output row (dim 0).
    g, v = legacy["conv_pre.weight_g"].double(), legacy["conv_pre.weight_v"].double()
    expected = g * v / v.flatten(1).norm(dim=1).view(-1, 1, 1)
    assert torch.allclose(a.conv_pre.weight.double(), expected, rtol=1e-6)


def test_transposed_conv_weight_norm_uses_input_rows() -> None:
    checkpoint = random_vocoder_checkpoint(tiny_config("16k"))
    g = checkpoint["generator"]["ups.0.0.weight_g"]
    v = checkpoint["generator"]["ups.0.0.weight_v"]
    assert g.shape == (TINY_WIDTH, 1, 1) and v.shape[0] == TINY_WIDTH  # [in, 1, 1] for ConvTranspose1d
    vocoder = load_vocoder(checkpoint)
    rows = vocoder.ups[0][0].weight.double().flatten(1).norm(dim=1)
    assert torch.allclose(rows, g.double().flatten(), rtol=1e-6)


def test_stored_filters_equal_the_computed_kaiser_sinc() -> None:
    stored = load_file(str(golden_dir() / "vocoder_16k.weights.safetensors"))
    computed = kaiser_sinc_filter(0.25, 0.3, 12)
    for key, value in stored.items():
        if key.endswith(".filter"):
            assert torch.allclose(value, computed, rtol=0, atol=1e-7), key
    assert math.isclose(float(computed.sum()), 1.0, rel_tol=1e-6)
    assert torch.allclose(computed.flatten(), computed.flatten().flip(0))


def test_resampling_lengths_and_passband() -> None:
    period = 40.0
    t = torch.arange(400, dtype=torch.float64)
    x = torch.sin(2 * math.pi * t / period).float().view(1, 1, -1).repeat(1, 3, 1)
    up = UpSample1d(2, 12)(x)
    assert up.shape == (1, 3, 800)
    # The even-length filter puts the 2x samples half a fine step off the input grid: sample 2n+k of the
    # output is the signal at time n + (2k - 1)/4 (away from the replicated edges).
    for k in (0, 1):
        expected = torch.sin(2 * math.pi * (t + (2 * k - 1) / 4) / period).float()
        assert torch.allclose(up[0, :, k::2][:, 20:-20], expected[20:-20].expand(3, -1), atol=1e-2)
    down = DownSample1d(2, 12)(up)
    assert down.shape == x.shape
    assert torch.allclose(down[..., 20:-20], x[..., 20:-20], atol=1e-2)
    # Above the new Nyquist the low-pass removes most of the energy.
    fast = torch.sin(2 * math.pi * torch.arange(800, dtype=torch.float32) * 0.45).view(1, 1, -1)
    assert DownSample1d(2, 12)(fast)[..., 20:-20].abs().max() < 0.1


def test_snake_parameters_are_log_scale() -> None:
    x = torch.randn(2, 3, 5)
    act = SnakeBeta(3, logscale=True)
    act.alpha.data = torch.tensor([0.1, -0.2, 0.3])
    act.beta.data = torch.tensor([-0.1, 0.4, 0.0])
    a, b = act.alpha.exp().view(1, -1, 1), act.beta.exp().view(1, -1, 1)
    assert torch.allclose(act(x), x + torch.sin(a * x) ** 2 / b, atol=1e-6)
    snake = Snake(3, logscale=True)
    snake.alpha.data = torch.tensor([0.1, -0.2, 0.3])
    assert torch.allclose(snake(x), x + torch.sin(a * x) ** 2 / a, atol=1e-6)


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_final_activation_tanh_v1_clamp_v2(mode: str) -> None:
    vocoder = load_vocoder(random_vocoder_checkpoint(tiny_config(mode), seed=1))
    vocoder.conv_post.weight.mul_(50.0)  # push part of the output past ±1
    captured: list[torch.Tensor] = []
    vocoder.conv_post.register_forward_hook(lambda _m, _i, out: captured.append(out))
    mel = torch.randn(1, vocoder.config.num_mels, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = vocoder(mel)
    pre = captured[0]
    expected = torch.tanh(pre) if mode == "16k" else pre.clamp(-1, 1)
    assert torch.equal(y, expected)
    assert (pre.abs() > 1).any()


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_output_length_is_frames_times_hop(mode: str) -> None:
    config = tiny_config(mode)
    vocoder = load_vocoder(random_vocoder_checkpoint(config, seed=2))
    mel = torch.randn(2, config.num_mels, 7, generator=torch.Generator().manual_seed(3)) - 4.0
    with torch.no_grad():
        y = vocoder(mel)
    assert y.shape == (2, 1, 7 * config.hop_length) and y.dtype == torch.float32
    assert torch.isfinite(y).all() and y.abs().max() <= 1.0


def test_fp16_storage_runs_in_float32_activations() -> None:
    checkpoint = random_vocoder_checkpoint(tiny_config("44k"), seed=4)
    ref = load_vocoder(checkpoint)
    half = load_vocoder(checkpoint, dtype=torch.float16)
    assert half.conv_pre.weight.dtype == torch.float16
    assert all(b.dtype == torch.float32 for n, b in half.named_buffers() if n.endswith("filter"))
    mel = torch.randn(1, 128, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ref(mel), half(mel)
    assert b.dtype == torch.float32
    assert ((a - b).norm() / a.norm()).item() < 1e-2


def test_vae_file_is_rejected_with_its_name() -> None:
    sd = {"data_mean": torch.zeros(1, 80, 1), "decoder.conv_in.weight": torch.zeros(64, 20, 3)}
    with pytest.raises(WrongCheckpointError, match=r"v1-16\.pth is not a BigVGAN vocoder") as info:
        load_vocoder(sd, source="v1-16.pth")
    assert describe_contents(sd).rstrip(".") in str(info.value)


def test_a_real_vae_file_is_named_as_a_vae() -> None:
    from tests.test_vae import TINY, random_vae_state_dict

    with pytest.raises(WrongCheckpointError, match=r"v1-16\.pth is not a BigVGAN vocoder.*\. What it holds: "
                                                   r"MMAudio VAE, 16 kHz"):
        load_vocoder(random_vae_state_dict(TINY["16k"]), source="v1-16.pth")


def test_other_bigvgan_release_is_rejected() -> None:
    """An 80-band BigVGAN without conv_post bias (e.g. NVIDIA's 22 kHz v2) is not MMAudio's 16 kHz vocoder."""
    sd = random_vocoder_checkpoint(tiny_config("16k"))["generator"]
    del sd["conv_post.bias"]
    with pytest.raises(WrongCheckpointError, match="another BigVGAN release"):
        load_vocoder(sd, source="bigvgan_v2_22khz_80band_256x.pt")


@pytest.mark.parametrize("damage", ["half_pair", "drop_key", "wrong_shape"])
def test_damaged_checkpoint_is_rejected(damage: str) -> None:
    sd = random_vocoder_checkpoint(tiny_config("44k"))["generator"]
    if damage == "half_pair":
        del sd["resblocks.4.convs2.1.weight_v"]
        pattern = "resblocks.4.convs2.1.*incomplete"
    elif damage == "drop_key":
        del sd["resblocks.7.activations.3.act.beta"]
        pattern = "missing keys.*resblocks.7.activations.3.act.beta"
    else:
        sd["resblocks.2.convs1.0.bias"] = torch.zeros(5)
        pattern = "wrong shape.*resblocks.2.convs1.0.bias"
    with pytest.raises(WrongCheckpointError, match=f"bigvgan_generator.pt.*{pattern}"):
        load_vocoder(sd, source="bigvgan_generator.pt")


def test_explicit_hub_config_mapping_is_accepted() -> None:
    config = tiny_config("44k")
    hub = {**{k: list(v) if isinstance(v, tuple) else v for k, v in config.__dict__.items()}, "batch_size": 32}
    vocoder = load_vocoder(random_vocoder_checkpoint(config), config=hub)
    assert vocoder.config.upsample_initial_channel == TINY_WIDTH and vocoder.sample_rate == 44100
