"""The mel VAE: checkpoint layouts, load-time weight folding, decode/encode shapes and loader errors."""

from __future__ import annotations

import math

import pytest
import torch

from mmaudio.errors import WrongCheckpointError
from mmaudio.vae import VAE, VAEConfig, infer_vae_config, load_vae, vae_state_dict_template
from mmaudio.vae.checkpoint_info import describe_contents
from mmaudio.vae.mp_layers import mp_normalized_weight
from tests.parity.cases import load_manifest

# Small widths keep the CPU tests fast; data_dim/embed_dim stay real so shapes are those of 16k/44k.
TINY = {"16k": VAEConfig(data_dim=80, embed_dim=20, hidden_dim=8),
        "44k": VAEConfig(data_dim=128, embed_dim=40, hidden_dim=8)}
# Latent frames of an 8 s clip (the reference's sequence lengths).
LATENT_FRAMES_8S = {"16k": 250, "44k": 345}


def random_vae_state_dict(config: VAEConfig, seed: int = 0, dtype: torch.dtype = torch.float32,
                          with_encoder: bool = True) -> dict[str, torch.Tensor]:
    """A checkpoint-like state dict: raw random conv weights, random gains and mel statistics."""
    generator = torch.Generator().manual_seed(seed)
    template = vae_state_dict_template(config, with_encoder=with_encoder)
    sd = {}
    for key, shape in sorted(template.items()):
        value = torch.randn(shape, generator=generator)
        if key == "data_std":
            value = 0.5 + value.abs()
        elif key.endswith("learnable_gain"):
            value = 0.1 * value
        sd[key] = value.to(dtype)
    return sd


def meta_state_dict(manifest: dict) -> dict[str, torch.Tensor]:
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    return {k: torch.empty(v["shape"], dtype=dtypes[v["dtype"]], device="meta") for k, v in manifest["keys"].items()}


@pytest.mark.parametrize(("manifest_name", "mode"), [("vae_v1-16.json", "16k"), ("vae_v1-44.json", "44k")])
def test_manifest_keys_load_strictly_at_full_size(manifest_name: str, mode: str) -> None:
    manifest = load_manifest(manifest_name)
    expected = {k: tuple(v["shape"]) for k, v in manifest["keys"].items()}
    config = VAEConfig.for_mode(mode)
    assert vae_state_dict_template(config) == expected
    assert sum(math.prod(s) for s in expected.values()) == manifest["param_count"]
    sd = meta_state_dict(manifest)
    assert infer_vae_config(sd) == config
    vae = load_vae(sd, source=manifest["checkpoint_file"])
    assert vae.mode == mode and vae.config == config and vae.weights_folded
    assert vae.decoder.conv_in.weight.device.type == "meta"


def test_kijai_fp16_layout_loads_and_keeps_storage_dtype() -> None:
    """Kijai's mmaudio_vae_44k_fp16.safetensors: same keys as v1-44.pth, float16 raw weights."""
    sd = meta_state_dict(load_manifest("vae_v1-44.json"))
    sd = {k: v.to(torch.float16) for k, v in sd.items()}
    vae = load_vae(sd, source="mmaudio_vae_44k_fp16.safetensors")
    assert vae.decoder.conv_out.weight.dtype == torch.float16
    assert vae.data_mean.dtype == torch.float32
    vae32 = load_vae(dict(sd), source="mmaudio_vae_44k_fp16.safetensors", dtype=torch.float32)
    assert vae32.decoder.conv_out.weight.dtype == torch.float32


def test_weights_are_folded_once_with_unit_rows_and_gain() -> None:
    config = TINY["16k"]
    sd = random_vae_state_dict(config)
    originals = {k: v.clone() for k, v in sd.items()}
    raw_out = sd["decoder.conv_out.weight"].clone()
    gain = float(sd["decoder.learnable_gain"]) + 1
    gains = {"decoder.conv_out": gain, "encoder.conv_out": float(sd["encoder.learnable_gain"]) + 1}
    vae = load_vae(dict(sd))
    for name, module in vae.named_modules():
        if isinstance(module, torch.nn.Conv1d):
            row_norms = module.weight.double().flatten(1).norm(dim=1)
            target = gains.get(name, 1.0)
            assert torch.allclose(row_norms, torch.full_like(row_norms, target), rtol=1e-3), name
    # Independent float64 statement of the folding formula for conv_out.
    w = raw_out.double()
    fan_in = w[0].numel()
    norms = w.flatten(1).norm(dim=1).view(-1, 1, 1)
    expected = w / (1e-4 + norms / math.sqrt(fan_in)) / math.sqrt(fan_in) * gain
    assert torch.allclose(vae.decoder.conv_out.weight.double(), expected, rtol=1e-6, atol=1e-9)
    assert float(vae.decoder.learnable_gain) == 0.0
    # The caller's tensors are taken over but never modified.
    assert all(torch.equal(originals[k], v) for k, v in sd.items())
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    vae.fold_weights()  # already folded: a no-op
    assert all(torch.equal(before[k], v) for k, v in vae.state_dict().items())


def test_mp_normalized_weight_is_float32() -> None:
    w = torch.randn(4, 3, 3, dtype=torch.float16)
    assert mp_normalized_weight(w).dtype == torch.float32


def test_raw_weights_refuse_to_run() -> None:
    vae = VAE(TINY["16k"])
    with pytest.raises(RuntimeError, match="raw"):
        vae.decode(torch.zeros(1, 20, 4))


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_decode_8s_latent_on_cpu(mode: str) -> None:
    config = TINY[mode]
    vae = load_vae(random_vae_state_dict(config))
    frames = LATENT_FRAMES_8S[mode]
    z = torch.randn(2, config.embed_dim, frames, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mel = vae.decode(z)
        again = vae.decode(z)
    assert mel.shape == (2, config.data_dim, 2 * frames) and mel.dtype == torch.float32
    assert torch.isfinite(mel).all()
    assert torch.equal(mel, again)
    # Unnormalization uses the file's statistics: changing data_mean shifts the output by exactly that.
    vae.data_mean += 1.0
    with torch.no_grad():
        assert torch.allclose(vae.decode(z), mel + 1.0, atol=1e-5)


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_encode_shapes_and_determinism(mode: str) -> None:
    config = TINY[mode]
    vae = load_vae(random_vae_state_dict(config, seed=3))
    mel = torch.randn(2, config.data_dim, 2 * 50 + 1, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        posterior = vae.encode(mel)
        again = vae.encode(mel)
    assert posterior.mean.shape == (2, config.embed_dim, 50)
    assert posterior.logvar.shape == posterior.mean.shape
    assert torch.equal(posterior.mean, again.mean) and torch.equal(posterior.logvar, again.logvar)
    assert torch.isfinite(posterior.std).all() and (posterior.logvar <= 20).all()
    a = posterior.sample(torch.Generator().manual_seed(7))
    b = posterior.sample(torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not torch.equal(a, posterior.mode())
    # Encoder and decoder are a pair: the decoder maps the encoder's latent back to the mel's length.
    with torch.no_grad():
        assert vae.decode(posterior.mode()).shape == (2, config.data_dim, 100)


def test_decoder_only_checkpoint_decodes_but_cannot_encode() -> None:
    config = TINY["16k"]
    vae = load_vae(random_vae_state_dict(config, with_encoder=False), source="decoder_only.safetensors")
    assert vae.encoder is None
    with torch.no_grad():
        assert vae.decode(torch.zeros(1, 20, 3)).shape == (1, 80, 6)
    with pytest.raises(WrongCheckpointError, match=r"decoder_only\.safetensors"):
        vae.encode(torch.zeros(1, 80, 8))


def test_fp16_storage_decodes_close_to_fp32() -> None:
    config = TINY["44k"]
    sd = random_vae_state_dict(config, seed=5)
    ref = load_vae(dict(sd))
    half = load_vae({k: v.to(torch.float16) for k, v in sd.items()}, dtype=torch.float16)
    z = torch.randn(1, config.embed_dim, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ref.decode(z), half.decode(z)
    assert b.dtype == torch.float32
    assert ((a - b).norm() / a.norm()).item() < 1e-2


def test_vocoder_file_is_rejected_with_its_name() -> None:
    sd = {"conv_pre.weight_g": torch.zeros(16, 1, 1), "conv_pre.weight_v": torch.zeros(16, 80, 7),
          "ups.0.0.weight_v": torch.zeros(16, 8, 8)}
    with pytest.raises(WrongCheckpointError, match=r"best_netG\.pt is not an MMAudio VAE") as info:
        load_vae(sd, source="best_netG.pt")
    # The message says what the file holds, in the words of the one checkpoint detector.
    assert describe_contents(sd).rstrip(".") in str(info.value)


def test_a_real_vocoder_file_is_named_as_a_vocoder() -> None:
    from tests.test_vocoder import random_vocoder_checkpoint, tiny_config

    sd = random_vocoder_checkpoint(tiny_config("16k"))["generator"]
    with pytest.raises(WrongCheckpointError, match=r"best_netG\.pt is not an MMAudio VAE .*\. What it holds: "
                                                   r"BigVGAN v1 vocoder, 16 kHz"):
        load_vae(sd, source="best_netG.pt")


@pytest.mark.parametrize("damage", ["drop_key", "wrong_shape", "extra_key", "non_tensor"])
def test_damaged_checkpoint_is_rejected(damage: str) -> None:
    sd = random_vae_state_dict(TINY["16k"])
    if damage == "drop_key":
        del sd["decoder.mid.block_1.conv2.weight"]
        pattern = "missing keys.*mid.block_1.conv2"
    elif damage == "wrong_shape":
        sd["decoder.up.0.block.1.conv1.weight"] = torch.zeros(8, 8, 5)
        pattern = "wrong shape.*up.0.block.1.conv1"
    elif damage == "extra_key":
        sd["decoder.quant_conv.weight"] = torch.zeros(1)
        pattern = "unexpected keys.*quant_conv"
    else:
        sd["optimizer"] = {"step": 3}
        pattern = "non-tensor entries.*optimizer"
    with pytest.raises(WrongCheckpointError, match=f"v1-16.pth.*{pattern}"):
        load_vae(sd, source="v1-16.pth")


def test_unknown_mel_width_is_rejected() -> None:
    sd = random_vae_state_dict(VAEConfig(data_dim=64, embed_dim=8, hidden_dim=8))
    with pytest.raises(WrongCheckpointError, match="64 mel bands"):
        load_vae(sd, source="other_vae.pth")


def test_not_a_mapping_is_rejected() -> None:
    with pytest.raises(WrongCheckpointError, match=r"weird\.pth.*list, not a state dict"):
        load_vae([1, 2, 3], source="weird.pth")  # type: ignore[arg-type]
