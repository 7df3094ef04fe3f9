"""Timestep embedding and rotary position tables.

Both are pure functions of a few integers, so they are not stored in the state_dict: they are computed in
float32 on the CPU (the same numbers on every device), cached per device, and never follow the weights'
dtype. This matters for v2, whose timestep frequencies reach 10^4 rad per unit time: rounding them, or t, to
bfloat16 rotates the high channels by whole radians. The tables are made outside inference mode, so a
network first run under ``torch.inference_mode`` (as ComfyUI does) still works with autograd later.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

ROPE_THETA = 10000.0


def _inverse_powers(dim: int, base: float = 10000.0) -> torch.Tensor:
    """float32 ``1 / base^(2i / dim)`` for i < dim / 2, computed as the reference does."""
    exponents = torch.arange(0, dim, 2, dtype=torch.float32, device="cpu") / dim
    return 1.0 / (base ** exponents)


def timestep_frequencies(frequency_dim: int, max_period: float) -> torch.Tensor:
    """Angular frequencies of the timestep sinusoid: (10000 / max_period) * 10000^(-2i / frequency_dim)."""
    return (10000.0 / max_period) * _inverse_powers(frequency_dim)


def rotary_cos_sin(length: int, head_dim: int, freq_scaling: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 cos and sin tables [length, head_dim / 2] of the angles position * theta^(-2i/head_dim) * scaling."""
    freqs = _inverse_powers(head_dim, ROPE_THETA) * freq_scaling
    positions = torch.arange(length, dtype=torch.float32, device="cpu")
    angles = positions[:, None] * freqs[None, :]
    return torch.cos(angles), torch.sin(angles)


def rotary_matrix_table(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The reference's table layout [1, L, head_dim/2, 2, 2]: [[cos, -sin], [sin, cos]] per position and pair."""
    rows = torch.stack([cos, -sin, sin, cos], dim=-1)
    return rows.view(1, *cos.shape, 2, 2)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs (2i, 2i+1) of x [..., L, head_dim] in float32; returns x's dtype."""
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([cos * even - sin * odd, sin * even + cos * odd], dim=-1)
    return rotated.flatten(-2).to(x.dtype)


class RotaryTables:
    """float32 cos/sin tables for the latent and CLIP streams at the current sequence lengths, per device.

    The CLIP tokens get their frequencies scaled by latent_len / clip_len, so both streams live on one time axis.
    """

    def __init__(self, head_dim: int) -> None:
        self.head_dim = head_dim
        self._lengths: tuple[int, int] | None = None
        self._cpu: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._on_device: dict[tuple[str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def set_lengths(self, latent_len: int, clip_len: int) -> None:
        if self._lengths == (latent_len, clip_len):
            return
        self._lengths = (latent_len, clip_len)
        with torch.inference_mode(False):
            self._cpu = {
                "latent": rotary_cos_sin(latent_len, self.head_dim),
                "clip": rotary_cos_sin(clip_len, self.head_dim, freq_scaling=latent_len / clip_len),
            }
        self._on_device.clear()

    def get(self, stream: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (stream, torch.device(device))
        tables = self._on_device.get(key)
        if tables is None:
            cos, sin = self._cpu[stream]
            with torch.inference_mode(False):
                tables = (cos.to(device), sin.to(device))
            self._on_device[key] = tables
        return tables

    def release_device_copies(self) -> None:
        """Forget the copies on compute devices (the float32 CPU tables stay)."""
        self._on_device.clear()

    def matrix_table(self, stream: str) -> torch.Tensor:
        return rotary_matrix_table(*self._cpu[stream])


class TimestepEmbedder(nn.Module):
    """Sinusoid of the flow time t in [0, 1] (laid out [cos, sin]) followed by Linear-SiLU-Linear.

    v1: 256 sinusoid channels, max_period 10000; v2: hidden_dim channels, max_period 1.
    """

    def __init__(self, dim: int, frequency_dim: int, max_period: float, ops: Any) -> None:
        super().__init__()
        if frequency_dim % 2:
            raise ValueError(f"frequency_dim must be even, got {frequency_dim}")
        self.frequency_dim = frequency_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(ops.Linear(frequency_dim, dim, bias=True), nn.SiLU(), ops.Linear(dim, dim, bias=True))
        self._freqs_on_device: dict[torch.device, torch.Tensor] = {}
        self.rebuild()

    def _freqs(self, device: torch.device) -> torch.Tensor:
        freqs = self._freqs_on_device.get(device)
        if freqs is None:
            with torch.inference_mode(False):
                freqs = self._freqs_cpu.to(device)
            self._freqs_on_device[device] = freqs
        return freqs

    def prepare(self, device: torch.device) -> None:
        """Copy the frequencies to ``device`` ahead of the first call."""
        self._freqs(device)

    def release_device_copies(self) -> None:
        """Forget the copies on compute devices (the float32 CPU frequencies stay)."""
        self._freqs_on_device.clear()

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> TimestepEmbedder:
        # Moving the module (.to/.cpu/.cuda, or a memory manager offloading it) drops the per-device copies, so
        # nothing of this module stays on a device it has left.
        self.release_device_copies()
        return super()._apply(fn, *args, **kwargs)

    def rebuild(self) -> None:
        """Recompute the float32 frequencies (after construction on the meta device or a dtype cast)."""
        with torch.inference_mode(False):
            self._freqs_cpu = timestep_frequencies(self.frequency_dim, self.max_period)
        self._freqs_on_device.clear()

    def sinusoid(self, t: torch.Tensor) -> torch.Tensor:
        """float32 [B, frequency_dim] features of t [B]; t is taken in float32 whatever its dtype."""
        args = t.float()[:, None] * self._freqs(t.device)[None, :]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Embedding [B, dim]; the float32 sinusoid is cast to ``dtype`` (the compute dtype) for the MLP."""
        features = self.sinusoid(t)
        if dtype is None:
            dtype = torch.float32
        return self.mlp(features.to(dtype))
