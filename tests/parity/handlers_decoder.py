"""Golden-case handlers for the decoder stack: VAE decode, vocoders, both chained, and the mel front-end.

Every module is built from the case's ``constructor`` and loaded with the same loader functions as the real
checkpoints; inputs, outputs and tolerances come from the case JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from mmaudio.decoder import AudioDecoder
from mmaudio.mel import MelConfig, MelConverter
from mmaudio.vae import VAE, VAEConfig, infer_vae_config, load_vae
from mmaudio.vocoder import BigVGAN, BigVGANConfig, infer_vocoder_config, load_vocoder

from .cases import GoldenCase, assert_rel_l2


def _single_input(case: GoldenCase) -> torch.Tensor:
    inputs = case.spec.get("inputs")
    assert isinstance(inputs, dict) and len(inputs) == 1, f"case {case.name}: expected one input, got {inputs!r}"
    (name,) = inputs
    key = f"in.{name}"
    io = case.io()
    assert key in io, f"case {case.name}: {key} missing from {case.spec.get('io_file')}"
    tensor = io[key]
    assert list(tensor.shape) == list(inputs[name]["shape"]), f"case {case.name}: {key} shape differs from JSON"
    return tensor


def _check_outputs(case: GoldenCase, computed: Mapping[str, torch.Tensor]) -> None:
    outputs = case.spec.get("outputs")
    assert isinstance(outputs, dict) and outputs, f"case {case.name}: no outputs listed"
    io = case.io()
    for name in outputs:
        assert name in computed, f"case {case.name}: output {name!r} is not produced by this handler"
        assert_rel_l2(computed[name], io[f"out.{name}"], case.tolerance(name), f"{case.name}.{name}")


def _prefixed(weights: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


def _build_vae(case: GoldenCase, constructor: Mapping[str, Any], weights: Mapping[str, torch.Tensor]) -> VAE:
    config = VAEConfig(data_dim=int(constructor["data_dim"]), embed_dim=int(constructor["embed_dim"]),
                       hidden_dim=int(constructor["hidden_dim"]))
    # The widths the loader detects from the shapes alone must be the constructor's.
    assert infer_vae_config(weights, case.name) == config, f"case {case.name}: VAE widths inferred wrongly"
    return load_vae(dict(weights), source=f"{case.name} VAE weights", config=config)


def _structure(config: BigVGANConfig) -> dict[str, Any]:
    return {k: v for k, v in config.__dict__.items() if k != "sampling_rate"}


def _build_vocoder(case: GoldenCase, constructor: Mapping[str, Any],
                   weights: Mapping[str, torch.Tensor]) -> BigVGAN:
    config = BigVGANConfig.from_dict(constructor["config"])
    # The structure the loader detects from the shapes alone must be the constructor's (sample rate aside).
    inferred = infer_vocoder_config(weights, case.name)
    assert _structure(inferred) == _structure(config), f"case {case.name}: vocoder inferred as {inferred}"
    return load_vocoder(dict(weights), source=f"{case.name} vocoder weights", config=config)


def run_vae_decode(case: GoldenCase) -> None:
    vae = _build_vae(case, case.spec["constructor"], case.weights())
    z = _single_input(case)  # (B, latent_dim, T): the VAE's own layout
    _check_outputs(case, {"mel": vae.decode(z)})


def run_vocoder(case: GoldenCase) -> None:
    vocoder = _build_vocoder(case, case.spec["constructor"], case.weights())
    _check_outputs(case, {"waveform": vocoder(_single_input(case))})


def run_vae_plus_vocoder(case: GoldenCase) -> None:
    constructor = case.spec["constructor"]
    weights = case.weights()
    vae = _build_vae(case, constructor["vae"], _prefixed(weights, "vae."))
    vocoder = _build_vocoder(case, constructor["vocoder"], _prefixed(weights, "vocoder."))
    decoder = AudioDecoder(vae, vocoder)
    latent = _single_input(case).transpose(1, 2)  # the network's (B, T, latent_dim) layout
    waveform = decoder.decode(latent)
    assert waveform.dtype == torch.float32 and waveform.shape[1] == 1
    _check_outputs(case, {"mel": decoder.decode_mel(latent), "waveform": waveform})


def _mel_config(c: Mapping[str, Any]) -> MelConfig:
    log = {"log10": "log10", "ln": "ln", "log": "ln"}[str(c["norm_fn"])]
    return MelConfig(sampling_rate=int(c["sampling_rate"]), n_fft=int(c["n_fft"]), num_mels=int(c["num_mels"]),
                     hop_size=int(c["hop_size"]), win_size=int(c["win_size"]), fmin=float(c["fmin"]),
                     fmax=float(c["fmax"]), log=log)


def run_mel(case: GoldenCase) -> None:
    config = _mel_config(case.spec["constructor"])
    converter = MelConverter(config)
    buffers = case.weights()
    # The stored buffers are the reference's computed constants; ours are computed independently.
    assert_rel_l2(converter.mel_basis, buffers["mel_basis"], 1e-6, f"{case.name}.mel_basis")
    assert_rel_l2(converter.window, buffers["hann_window"], 1e-6, f"{case.name}.hann_window")
    waveform = _single_input(case)
    mel = converter(waveform)
    assert mel.shape[-1] == config.num_frames(waveform.shape[-1])
    _check_outputs(case, {"mel": mel})


def run_vae_encode(case: GoldenCase) -> None:
    """Waveform -> mel -> VAE encoder -> posterior, through the decoder stack's own encode path."""
    constructor = case.spec["constructor"]
    vae = _build_vae(case, constructor["vae"], case.weights())
    mel_config = _mel_config(constructor["mel_converter"])
    assert mel_config == MelConverter.for_mode(str(case.spec["mode"])).config, (
        f"case {case.name}: the mel front-end of mode {case.spec['mode']!r} differs from the case's")
    io = case.io()
    waveform, noise = io["in.waveform"], io["in.noise"]
    mel = MelConverter(mel_config)(waveform)
    posterior = vae.encode(mel)  # (B, latent_dim, T_latent), the layout of the case
    computed = {"mean": posterior.mean, "std": posterior.std, "sample": posterior.mean + posterior.std * noise}
    _check_outputs(case, computed)
    debug = {"mel": mel, "logvar": posterior.logvar, "roundtrip_mel": vae.decode(posterior.mean)}
    for name, tensor in debug.items():
        assert_rel_l2(tensor, io[f"debug.{name}"], case.tolerance(name), f"{case.name}.debug.{name}")


HANDLERS: dict[str, Callable[[GoldenCase], None]] = {
    "vae_decode": run_vae_decode,
    "vocoder": run_vocoder,
    "vae_plus_vocoder": run_vae_plus_vocoder,
    "mel": run_mel,
    "vae_encode": run_vae_encode,
}
