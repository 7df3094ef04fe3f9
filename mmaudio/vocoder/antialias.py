"""Anti-aliased activation of BigVGAN: upsample 2x, apply the periodic nonlinearity, downsample 2x.

A pointwise nonlinearity creates harmonics above Nyquist; running it at twice the rate between two
Kaiser-windowed sinc low-pass filters keeps them from folding back as aliasing. Plain PyTorch (no CUDA
extension). The filters are stored in the checkpoints; :func:`kaiser_sinc_filter` recomputes the same values.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _kaiser_beta(attenuation_db: float) -> float:
    """Kaiser's empirical window shape for a given stop-band attenuation."""
    if attenuation_db > 50.0:
        return 0.1102 * (attenuation_db - 8.7)
    if attenuation_db >= 21.0:
        return 0.5842 * (attenuation_db - 21.0) ** 0.4 + 0.07886 * (attenuation_db - 21.0)
    return 0.0


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """Low-pass FIR taps [1, 1, kernel_size] (cutoff and transition half-width as fractions of the sample
    rate), normalized to unit DC gain. Computed in float32 on the current default device."""
    half = kernel_size // 2
    attenuation = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95
    window = torch.kaiser_window(kernel_size, periodic=False, beta=_kaiser_beta(attenuation), dtype=torch.float32)
    if kernel_size % 2 == 0:
        time = torch.arange(-half, half, dtype=torch.float32) + 0.5
    else:
        time = torch.arange(kernel_size, dtype=torch.float32) - half
    if cutoff == 0:
        taps = torch.zeros_like(time)
    else:
        taps = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
        taps = taps / taps.sum()
    return taps.view(1, 1, kernel_size)


class UpSample1d(nn.Module):
    """Zero-stuffing upsampler followed by the low-pass filter (a strided transposed conv), edges replicated."""

    def __init__(self, ratio: int = 2, kernel_size: int = 12) -> None:
        super().__init__()
        self.ratio = ratio
        self.kernel_size = kernel_size
        self.pad = kernel_size // ratio - 1
        self.crop_left = self.pad * ratio + (kernel_size - ratio) // 2
        self.crop_right = self.pad * ratio + (kernel_size - ratio + 1) // 2
        self.register_buffer("filter", kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel_size))

    def reset_filter(self) -> None:
        """Recompute the taps (float32) on the buffer's device, e.g. for a module built without a checkpoint."""
        self.filter = kaiser_sinc_filter(0.5 / self.ratio, 0.6 / self.ratio, self.kernel_size).to(self.filter.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        taps = self.filter.to(x).expand(channels, -1, -1)
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = self.ratio * F.conv_transpose1d(x, taps, stride=self.ratio, groups=channels)
        return x[..., self.crop_left : x.shape[-1] - self.crop_right]


class LowPassFilter1d(nn.Module):
    """Depthwise FIR low-pass with replicate padding and an optional stride (decimation)."""

    def __init__(self, cutoff: float, half_width: float, stride: int, kernel_size: int) -> None:
        super().__init__()
        self.cutoff, self.half_width = cutoff, half_width
        self.stride = stride
        self.kernel_size = kernel_size
        self.pad_left = kernel_size // 2 - int(kernel_size % 2 == 0)
        self.pad_right = kernel_size // 2
        self.register_buffer("filter", kaiser_sinc_filter(cutoff, half_width, kernel_size))

    def reset_filter(self) -> None:
        self.filter = kaiser_sinc_filter(self.cutoff, self.half_width, self.kernel_size).to(self.filter.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        x = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        return F.conv1d(x, self.filter.to(x).expand(channels, -1, -1), stride=self.stride, groups=channels)


class DownSample1d(nn.Module):
    """Low-pass then keep every ``ratio``-th sample."""

    def __init__(self, ratio: int = 2, kernel_size: int = 12) -> None:
        super().__init__()
        self.lowpass = LowPassFilter1d(0.5 / ratio, 0.6 / ratio, ratio, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowpass(x)


class AntiAliasedActivation(nn.Module):
    """``act`` evaluated at twice the sample rate (key names ``act``, ``upsample``, ``downsample``)."""

    def __init__(self, act: nn.Module, ratio: int = 2, kernel_size: int = 12) -> None:
        super().__init__()
        self.act = act
        self.upsample = UpSample1d(ratio, kernel_size)
        self.downsample = DownSample1d(ratio, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))
