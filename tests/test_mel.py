"""Mel front-ends: the slaney filterbank computed here, the STFT conventions, shapes and input checks."""

from __future__ import annotations

import math

import pytest
import torch

from mmaudio.errors import InvalidInputError
from mmaudio.mel import MelConfig, MelConverter, hz_to_mel, mel_to_hz, slaney_mel_filterbank


def test_slaney_scale_is_linear_below_1khz_and_logarithmic_above() -> None:
    hz = torch.tensor([0.0, 200.0 / 3.0, 500.0, 1000.0, 2000.0, 6400.0], dtype=torch.float64)
    mel = hz_to_mel(hz)
    assert torch.allclose(mel[:4], hz[:4] * 3.0 / 200.0)
    # 27 mels per factor 6.4 above 1 kHz.
    assert math.isclose(float(mel[5] - mel[3]), 27.0, rel_tol=1e-12)
    assert math.isclose(float(mel[4] - mel[3]), 27.0 * math.log(2.0) / math.log(6.4), rel_tol=1e-12)
    assert torch.allclose(mel_to_hz(mel), hz, rtol=1e-12)


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_filterbank_triangles_and_area_normalization(mode: str) -> None:
    c = MelConfig.for_mode(mode)
    basis = slaney_mel_filterbank(c.sampling_rate, c.n_fft, c.num_mels, c.fmin, c.fmax)
    assert basis.shape == (c.num_mels, c.n_fft // 2 + 1) and basis.dtype == torch.float32
    assert (basis >= 0).all()
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(torch.tensor(c.fmin, dtype=torch.float64))),
                                     float(hz_to_mel(torch.tensor(c.fmax, dtype=torch.float64))),
                                     c.num_mels + 2, dtype=torch.float64))
    freqs = torch.arange(c.n_fft // 2 + 1, dtype=torch.float64) * c.sampling_rate / c.n_fft
    for i in range(0, c.num_mels, 7):
        row = basis[i].double()
        lo, centre, hi = edges[i], edges[i + 1], edges[i + 2]
        assert (row[(freqs <= lo) | (freqs >= hi)] == 0).all()
        # Triangle of peak 2 / (hi - lo) at the centre frequency (slaney area normalization).
        height = 2.0 / (hi - lo)
        expected = torch.clamp(torch.minimum((freqs - lo) / (centre - lo), (hi - freqs) / (hi - centre)), min=0)
        assert torch.allclose(row, height * expected, rtol=1e-5, atol=1e-9)


def test_periodic_hann_window() -> None:
    converter = MelConverter.for_mode("16k")
    n = torch.arange(1024, dtype=torch.float64)
    periodic = 0.5 - 0.5 * torch.cos(2 * math.pi * n / 1024)
    assert torch.allclose(converter.window.double(), periodic, atol=1e-7)
    assert converter.window.dtype == torch.float32 and converter.mel_basis.dtype == torch.float32


@pytest.mark.parametrize(("mode", "samples"), [("16k", 128000), ("44k", 352800), ("16k", 1000)])
def test_output_shape(mode: str, samples: int) -> None:
    converter = MelConverter.for_mode(mode)
    x = 0.1 * torch.randn(2, samples, generator=torch.Generator().manual_seed(0))
    mel = converter(x)
    c = converter.config
    frames = (samples + 2 * ((c.n_fft - c.hop_size) // 2) - c.n_fft) // c.hop_size + 1
    assert mel.shape == (2, c.num_mels, frames) == (2, c.num_mels, c.num_frames(samples))
    assert torch.equal(converter(x.unsqueeze(1)), mel)


def test_log_base_and_floor() -> None:
    silence = torch.zeros(1, 4000)
    mel16 = MelConverter.for_mode("16k")(silence)
    mel44 = MelConverter.for_mode("44k")(silence)
    # Silence: magnitude sqrt(1e-9) per bin, so every mel value sits at (or just above) the 1e-5 floor.
    assert torch.allclose(mel16, torch.full_like(mel16, math.log10(1e-5)), atol=0.5)
    assert torch.allclose(mel44, torch.full_like(mel44, math.log(1e-5)), atol=1.2)
    assert mel16.min() >= math.log10(1e-5) - 1e-6 and mel44.min() >= math.log(1e-5) - 1e-6


def test_tone_lands_in_its_band_and_input_is_clamped() -> None:
    converter = MelConverter.for_mode("16k")
    t = torch.arange(16000, dtype=torch.float32) / 16000
    tone = 0.5 * torch.sin(2 * math.pi * 1000.0 * t).view(1, -1)
    mel = converter(tone)
    centres = mel_to_hz(torch.linspace(0, float(hz_to_mel(torch.tensor(8000.0, dtype=torch.float64))), 82,
                                       dtype=torch.float64))[1:-1]
    peak_band = int(mel[0, :, 10:-10].mean(-1).argmax())
    assert abs(float(centres[peak_band]) - 1000.0) < 60.0
    loud = 3.0 * tone
    assert torch.equal(converter(loud), converter(loud.clamp(-1, 1)))


def test_meta_construction_and_buffer_reset() -> None:
    with torch.device("meta"):
        converter = MelConverter.for_mode("44k")
    converter.reset_buffers()
    reference = MelConverter.for_mode("44k")
    assert torch.equal(converter.mel_basis, reference.mel_basis)
    assert "mel_basis" not in converter.state_dict()


def test_bad_input_is_rejected() -> None:
    converter = MelConverter.for_mode("16k")
    with pytest.raises(InvalidInputError, match="batch, samples"):
        converter(torch.zeros(2, 3, 4, 5))
    with pytest.raises(InvalidInputError, match="too short"):
        converter(torch.zeros(1, 100))
