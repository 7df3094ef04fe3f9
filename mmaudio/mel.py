"""Log-mel front-ends of MMAudio's VAE (16 kHz and 44.1 kHz), in plain PyTorch.

The slaney-scale, slaney-normalized filterbank is computed here (the same numbers librosa's
``filters.mel`` gives), so neither librosa nor torchaudio is needed. Procedure: clamp to [-1, 1], reflect-pad
(n_fft - hop)/2 per side, STFT without centering with a periodic Hann window, magnitude
sqrt(re² + im² + 1e-9), mel projection, log of max(mel, 1e-5): log10 at 16 kHz, natural log at 44.1 kHz.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .errors import InvalidInputError
from .modes import mode_named

# Slaney's auditory scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_LOG_START_HZ = 1000.0
_SLANEY_LOG_START_MEL = _SLANEY_LOG_START_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = math.log(6.4) / 27.0

MAGNITUDE_EPS = 1e-9
LOG_FLOOR = 1e-5
# Live float32 values per frequency bin and frame at the STFT's peak (complex spectrum, squares, magnitude),
# measured on the CPU from the peak resident memory of long STFTs (~5.7).
STFT_LIVE_UNITS = 6


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """Slaney mel of frequencies in Hz (float64 in, float64 out)."""
    linear = hz / _SLANEY_HZ_PER_MEL
    octaves = torch.log(hz.clamp(min=_SLANEY_LOG_START_HZ) / _SLANEY_LOG_START_HZ)
    log_part = _SLANEY_LOG_START_MEL + octaves / _SLANEY_LOG_STEP
    return torch.where(hz >= _SLANEY_LOG_START_HZ, log_part, linear)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel`."""
    linear = mel * _SLANEY_HZ_PER_MEL
    log_part = _SLANEY_LOG_START_HZ * torch.exp(_SLANEY_LOG_STEP * (mel - _SLANEY_LOG_START_MEL))
    return torch.where(mel >= _SLANEY_LOG_START_MEL, log_part, linear)


def _linspace(start: float, stop: float, num: int) -> torch.Tensor:
    """Evenly spaced float64 values computed as start + i·step with an exact end point (numpy's rule)."""
    values = torch.arange(num, dtype=torch.float64, device="cpu") * ((stop - start) / (num - 1)) + start
    values[-1] = stop
    return values


def slaney_mel_filterbank(sample_rate: float, n_fft: int, n_mels: int, fmin: float = 0.0,
                          fmax: float | None = None) -> torch.Tensor:
    """Triangular mel filters [n_mels, n_fft // 2 + 1] with slaney area normalization, float32, on CPU.

    Triangles are centred on n_mels points evenly spaced in slaney mel between fmin and fmax; each is scaled
    by 2 / (its width in Hz) so every filter has the same area. Built in float64 and rounded the way
    librosa does (triangles to float32, then scaled), which reproduces its values.
    """
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    cpu64 = {"dtype": torch.float64, "device": "cpu"}  # explicit: also right under a meta-device context
    fft_freqs = torch.arange(n_fft // 2 + 1, **cpu64) * (1.0 / (n_fft * (1.0 / sample_rate)))
    mel_range = hz_to_mel(torch.tensor([float(fmin), fmax], **cpu64))
    mel_points = _linspace(float(mel_range[0]), float(mel_range[1]), n_mels + 2)
    edges_hz = mel_to_hz(mel_points)
    widths = edges_hz[1:] - edges_hz[:-1]
    ramps = edges_hz[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    triangles = torch.clamp(torch.minimum(rising, falling), min=0.0).to(torch.float32)
    area_norm = 2.0 / (edges_hz[2:] - edges_hz[:-2])
    return (triangles.to(torch.float64) * area_norm[:, None]).to(torch.float32)


@dataclass(frozen=True)
class MelConfig:
    sampling_rate: int
    n_fft: int
    num_mels: int
    hop_size: int
    win_size: int
    fmin: float
    fmax: float
    log: str  # "log10" or "ln"

    @classmethod
    def for_mode(cls, mode: str) -> MelConfig:
        """The front-end the VAE of ``mode`` ("16k" or "44k") was trained on."""
        spec = mode_named(mode)
        return cls(spec.sample_rate, spec.n_fft, spec.num_mels, spec.hop_length, spec.n_fft, 0.0, spec.mel_fmax,
                   spec.mel_log)

    def num_frames(self, num_samples: int) -> int:
        """Mel frames for a waveform of ``num_samples`` samples."""
        pad = (self.n_fft - self.hop_size) // 2
        return (num_samples + 2 * pad - self.n_fft) // self.hop_size + 1

    def memory(self, frames: int, batch: int = 1) -> int:
        """Peak bytes of computing ``frames`` mel frames at once (float32): the padded samples, the spectrum and
        its magnitude, and the mel."""
        samples = (frames - 1) * self.hop_size + self.n_fft
        bins = self.n_fft // 2 + 1
        return 4 * batch * (2 * samples + STFT_LIVE_UNITS * bins * frames + self.num_mels * frames)


class MelConverter(nn.Module):
    """Waveform (B, samples) in [-1, 1] -> log-mel (B, num_mels, frames), computed in float32.

    ``mel_basis`` and ``window`` are non-persistent float32 buffers; :meth:`reset_buffers` recomputes them
    (e.g. after building on the meta device).
    """

    def __init__(self, config: MelConfig) -> None:
        super().__init__()
        if config.log not in ("log10", "ln"):
            raise ValueError(f"unknown log for the mel front-end: {config.log!r}; expected 'log10' or 'ln'")
        self.config = config
        self.register_buffer("mel_basis", torch.empty(config.num_mels, config.n_fft // 2 + 1), persistent=False)
        self.register_buffer("window", torch.empty(config.win_size), persistent=False)
        self.reset_buffers()

    @classmethod
    def for_mode(cls, mode: str) -> MelConverter:
        return cls(MelConfig.for_mode(mode))

    def reset_buffers(self) -> None:
        """(Re)compute the filterbank and the periodic Hann window in float32 on the buffers' device."""
        c = self.config
        device = self.mel_basis.device
        if device.type == "meta":
            device = torch.device("cpu")
        self.mel_basis = slaney_mel_filterbank(c.sampling_rate, c.n_fft, c.num_mels, c.fmin, c.fmax).to(device)
        self.window = torch.hann_window(c.win_size, periodic=True, dtype=torch.float32, device="cpu").to(device)

    @property
    def padding(self) -> int:
        """Samples reflected at each end before the (uncentred) STFT."""
        return (self.config.n_fft - self.config.hop_size) // 2

    def _checked(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, samples) from (B, samples) or (B, 1, samples), long enough for the reflect padding."""
        if waveform.ndim == 3 and waveform.shape[1] == 1:
            waveform = waveform[:, 0]
        if waveform.ndim != 2:
            raise InvalidInputError(
                f"waveform must be (batch, samples) or (batch, 1, samples), got {tuple(waveform.shape)}"
            )
        if waveform.shape[-1] <= self.padding:
            raise InvalidInputError(
                f"waveform of {waveform.shape[-1]} samples is too short for a {self.config.n_fft}-point mel")
        return waveform

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        waveform = self._checked(waveform)
        pad = self.padding
        x = waveform.to(device=self.mel_basis.device, dtype=torch.float32).clamp(-1.0, 1.0)
        x = torch.nn.functional.pad(x.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        return self._log_mel(x)

    def frames(self, waveform: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Mel frames [start, stop) of ``waveform``: the same frames :meth:`forward` gives for the whole
        signal, computed from only the samples they cover (plus the reflection where they reach an end)."""
        waveform = self._checked(waveform)
        c, pad, total = self.config, self.padding, waveform.shape[-1]
        if not 0 <= start < stop <= c.num_frames(total):
            raise InvalidInputError(f"mel frames [{start}, {stop}) are outside the {c.num_frames(total)} frames "
                                    f"of a {total}-sample waveform")
        # Frame f covers padded samples [f·hop, f·hop + n_fft), i.e. samples [f·hop - pad, f·hop - pad + n_fft).
        first = start * c.hop_size - pad
        last = (stop - 1) * c.hop_size - pad + c.n_fft
        piece = waveform[:, max(first, 0) : min(last, total)]
        x = piece.to(device=self.mel_basis.device, dtype=torch.float32).clamp(-1.0, 1.0)
        reflect = (max(-first, 0), max(last - total, 0))
        if reflect != (0, 0):
            x = torch.nn.functional.pad(x.unsqueeze(1), reflect, mode="reflect").squeeze(1)
        return self._log_mel(x)

    def _log_mel(self, x: torch.Tensor) -> torch.Tensor:
        """Log-mel of already padded, clamped float32 samples (B, n): one frame per hop, uncentred."""
        c = self.config
        spec = torch.stft(x, c.n_fft, hop_length=c.hop_size, win_length=c.win_size, window=self.window,
                          center=False, normalized=False, onesided=True, return_complex=True)
        spec = torch.view_as_real(spec)
        magnitude = torch.sqrt(spec.pow(2).sum(-1) + MAGNITUDE_EPS)
        mel = torch.matmul(self.mel_basis, magnitude).clamp(min=LOG_FLOOR)
        return torch.log10(mel) if c.log == "log10" else torch.log(mel)
