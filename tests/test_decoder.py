"""AudioDecoder: 8 s decoding at the true sample rate, trimming, pairing checks, encode path."""

from __future__ import annotations

import pytest
import torch

from mmaudio.decoder import AudioDecoder
from mmaudio.errors import IncompatibleComponentsError, InvalidInputError
from mmaudio.vae import load_vae
from mmaudio.vocoder import load_vocoder
from tests.test_vae import LATENT_FRAMES_8S, TINY, random_vae_state_dict
from tests.test_vocoder import random_vocoder_checkpoint, tiny_config

SAMPLE_RATE = {"16k": 16000, "44k": 44100}
FILES = {"16k": ("v1-16.pth", "best_netG.pt"), "44k": ("v1-44.pth", "bigvgan_generator.pt")}


def make_decoder(mode: str, seed: int = 0, vae_source: str | None = None,
                 vocoder_source: str | None = None) -> AudioDecoder:
    vae = load_vae(random_vae_state_dict(TINY[mode], seed=seed), source=vae_source)
    vocoder = load_vocoder(random_vocoder_checkpoint(tiny_config(mode), seed=seed), source=vocoder_source)
    return AudioDecoder(vae, vocoder)


@pytest.fixture(scope="module", params=["16k", "44k"])
def decoder(request: pytest.FixtureRequest) -> AudioDecoder:
    """One decoder per mode, built from checkpoint-like state dicts (shared: building costs seconds)."""
    mode = request.param
    vae_file, vocoder_file = FILES[mode]
    return AudioDecoder(load_vae(random_vae_state_dict(TINY[mode], seed=2), source=vae_file),
                        load_vocoder(random_vocoder_checkpoint(tiny_config(mode), seed=2), source=vocoder_file))


def test_decode_8s_latent_to_trimmed_waveform(decoder: AudioDecoder) -> None:
    mode = decoder.mode
    assert decoder.mode == mode and decoder.sample_rate == SAMPLE_RATE[mode]
    frames = LATENT_FRAMES_8S[mode]
    latent = torch.randn(1, frames, decoder.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        audio = decoder.decode(latent, duration=8.0)
    assert audio.shape == (1, 1, 8 * SAMPLE_RATE[mode]) and audio.dtype == torch.float32
    assert torch.isfinite(audio).all() and audio.abs().max() <= 1.0
    # The latent covers at least the duration: 250·512 = 128000 (16k), 345·1024 = 353280 ≥ 352800 (44k).
    assert frames * decoder.samples_per_latent >= audio.shape[-1]


def test_trimming_options_agree_with_the_full_output(decoder: AudioDecoder) -> None:
    latent = torch.randn(2, 6, decoder.latent_dim, generator=torch.Generator().manual_seed(1))
    hop = decoder.samples_per_latent
    with torch.no_grad():
        full = decoder.decode(latent)
        by_samples = decoder.decode(latent, num_samples=3000)
        by_duration = decoder.decode(latent, duration=3000 / decoder.sample_rate)
        mel = decoder.decode_mel(latent)
    assert full.shape == (2, 1, 6 * hop)
    assert torch.equal(by_samples, full[..., :3000]) and torch.equal(by_duration, full[..., :3000])
    assert mel.shape == (2, decoder.vae.num_mels, 12)
    with torch.no_grad():
        assert torch.equal(decoder.vocode(mel), full)


def test_decode_rejects_bad_latents_and_lengths() -> None:
    decoder = make_decoder("16k")  # checks only: nothing is computed
    with pytest.raises(InvalidInputError, match="transpose"):
        decoder.decode(torch.zeros(1, 20, 8))
    with pytest.raises(InvalidInputError, match=r"\(batch, frames, 20\)"):
        decoder.decode(torch.zeros(1, 8, 40))
    with pytest.raises(InvalidInputError, match="4096 samples"):
        decoder.decode(torch.zeros(1, 8, 20), duration=1.0)
    with pytest.raises(InvalidInputError, match="not both"):
        decoder.decode(torch.zeros(1, 8, 20), duration=0.1, num_samples=10)


def test_network_mode_mismatch_is_reported_before_any_compute() -> None:
    decoder = make_decoder("16k")
    calls: list[str] = []
    decoder.vae.decoder.register_forward_pre_hook(lambda *_: calls.append("vae"))
    decoder.vocoder.register_forward_pre_hook(lambda *_: calls.append("vocoder"))
    with pytest.raises(IncompatibleComponentsError) as info:
        decoder.check_compatible("44k", network_name="mmaudio_large_44k_v2")
    message = str(info.value)
    for part in ("16 kHz", "v1-16.pth", "best_netG.pt", "mmaudio_large_44k_v2", "44.1 kHz", "v1-44.pth",
                 "BigVGAN v2 44.1 kHz"):
        assert part in message, (part, message)
    assert calls == []
    decoder.check_compatible("16k", network_name="mmaudio_small_16k", latent_dim=20)
    decoder.check_compatible(16000)
    with pytest.raises(IncompatibleComponentsError, match="40-channel"):
        decoder.check_compatible("16k", latent_dim=40)
    with pytest.raises(InvalidInputError, match="unknown audio mode"):
        decoder.check_compatible("22k")


def test_44k_decoder_names_its_files_and_advises_16k() -> None:
    decoder = make_decoder("44k", vae_source="mmaudio_vae_44k_fp16.safetensors",
                           vocoder_source="bigvgan_v2_44khz_128band_512x")
    with pytest.raises(IncompatibleComponentsError) as info:
        decoder.check_compatible("16k", network_name="mmaudio_small_16k")
    message = str(info.value)
    assert "mmaudio_vae_44k_fp16.safetensors + bigvgan_v2_44khz_128band_512x" in message
    assert "v1-16.pth" in message and "best_netG.pt" in message


def test_vae_and_vocoder_of_different_modes_cannot_be_paired() -> None:
    vae = load_vae(random_vae_state_dict(TINY["16k"]), source="v1-16.pth")
    vocoder = load_vocoder(random_vocoder_checkpoint(tiny_config("44k")), source="bigvgan_generator.pt")
    with pytest.raises(IncompatibleComponentsError, match=r"v1-16\.pth.*16 kHz.*bigvgan_generator\.pt.*44\.1 kHz"):
        AudioDecoder(vae, vocoder)


def test_encode_round_trip_shapes(decoder: AudioDecoder) -> None:
    vae_file, vocoder_file = FILES[decoder.mode]
    assert decoder.describe() == f"{'16 kHz' if decoder.mode == '16k' else '44.1 kHz'} ({vae_file} + {vocoder_file})"
    hop = decoder.samples_per_latent // 2
    samples = 40 * decoder.samples_per_latent + 100
    waveform = 0.3 * torch.randn(2, samples, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        posterior = decoder.encode(waveform)
        again = decoder.encode(waveform.unsqueeze(1))
    mel_frames = (samples + 2 * ((4 * hop - hop) // 2) - 4 * hop) // hop + 1  # n_fft = 4·hop in both modes
    assert posterior.mean.shape == (2, mel_frames // 2, decoder.latent_dim)  # the network's (B, T, C) layout
    assert torch.equal(posterior.mean, again.mean)
    with torch.no_grad():
        mel = decoder.decode_mel(posterior.mode())
    assert mel.shape == (2, decoder.vae.num_mels, 2 * (mel_frames // 2))
