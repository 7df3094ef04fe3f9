"""Snake activations (Ziyin et al. 2020): x + sin²(αx)/β, a learned per-channel periodic nonlinearity.

With ``logscale`` (both MMAudio vocoders) α and β are stored as logarithms and exponentiated at run time.
"""

from __future__ import annotations

import torch
from torch import nn

# Guards 1/β against division by zero (same constant as the trained models).
_EPS = 1e-9


def _per_channel(param: torch.Tensor, like: torch.Tensor, logscale: bool) -> torch.Tensor:
    """A (C,) parameter as (1, C, 1) in ``like``'s dtype, exponentiated in float32 when log-scaled."""
    value = param.to(device=like.device, dtype=torch.float32)
    if logscale:
        value = torch.exp(value)
    return value.to(like.dtype).view(1, -1, 1)


class Snake(nn.Module):
    """x + sin²(αx)/α."""

    def __init__(self, channels: int, logscale: bool = True) -> None:
        super().__init__()
        self.logscale = logscale
        self.alpha = nn.Parameter(torch.zeros(channels) if logscale else torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = _per_channel(self.alpha, x, self.logscale)
        return x + (1.0 / (alpha + _EPS)) * torch.sin(x * alpha).pow(2)


class SnakeBeta(nn.Module):
    """x + sin²(αx)/β: frequency and magnitude learned separately."""

    def __init__(self, channels: int, logscale: bool = True) -> None:
        super().__init__()
        self.logscale = logscale
        init = torch.zeros(channels) if logscale else torch.ones(channels)
        self.alpha = nn.Parameter(init.clone())
        self.beta = nn.Parameter(init.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = _per_channel(self.alpha, x, self.logscale)
        beta = _per_channel(self.beta, x, self.logscale)
        return x + (1.0 / (beta + _EPS)) * torch.sin(x * alpha).pow(2)


def make_snake(kind: str, channels: int, logscale: bool) -> nn.Module:
    if kind == "snakebeta":
        return SnakeBeta(channels, logscale)
    if kind == "snake":
        return Snake(channels, logscale)
    raise ValueError(f"unknown BigVGAN activation {kind!r}; expected 'snake' or 'snakebeta'")
