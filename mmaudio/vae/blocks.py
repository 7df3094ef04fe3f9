"""Building blocks of the VAE: resnet block, single-head attention, 2x up/down sampling.

Every conv is a magnitude-preserving conv: an ``ops.Conv1d`` without bias and with "same" padding whose
weight has already been normalized at load (see :mod:`.mp_layers`), so at run time it is a plain conv.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .mp_layers import channel_normalize, mp_silu, mp_sum

# Residual branch weight of every mp_sum in the blocks.
RESIDUAL_T = 0.3


def mp_conv(ops: Any, in_channels: int, out_channels: int, kernel_size: int) -> nn.Module:
    """A bias-free conv with "same" padding; its weight is normalized once by the loader."""
    return ops.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)


class ResnetBlock(nn.Module):
    """Pixel norm, two (mp_silu → conv) steps, then a magnitude-preserving residual sum."""

    def __init__(self, in_dim: int, out_dim: int, ops: Any, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv1 = mp_conv(ops, in_dim, out_dim, kernel_size)
        self.conv2 = mp_conv(ops, out_dim, out_dim, kernel_size)
        # A 1x1 projection of the skip path only where the width changes (key name kept from the reference).
        self.nin_shortcut = mp_conv(ops, in_dim, out_dim, 1) if in_dim != out_dim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = channel_normalize(x, dim=1)
        h = self.conv1(mp_silu(x))
        h = self.conv2(mp_silu(h))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return mp_sum(x, h, RESIDUAL_T)


class AttentionBlock(nn.Module):
    """Single-head self-attention over time with cosine-normalized q, k, v.

    The qkv projection's 3·C output channels are laid out (channel, q/k/v): channel c of q is row 3c.
    """

    def __init__(self, channels: int, ops: Any) -> None:
        super().__init__()
        self.qkv = mp_conv(ops, channels, channels * 3, 1)
        self.proj_out = mp_conv(ops, channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.project(x)
        return self.combine(x, F.scaled_dot_product_attention(q, k, v))

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalized queries, keys and values of (B, C, L) input, each a (B, 1, L, C) view.

        Every frame is projected and normalized on its own, so any stretch of frames can be projected apart.
        """
        batch, channels, length = x.shape
        qkv = self.qkv(x).view(batch, 1, channels, 3, length)
        qkv = channel_normalize(qkv, dim=2)
        # (B, 1, C, L) each -> (B, 1, L, C) for attention over time.
        q, k, v = (t.transpose(-1, -2) for t in qkv.unbind(3))
        return q, k, v

    def combine(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Output projection of the attention result (B, 1, L, C) and the residual sum with the input (B, C, L)."""
        batch, channels, length = x.shape
        h = attended.transpose(-1, -2).reshape(batch, channels, length)
        return mp_sum(x, self.proj_out(h), RESIDUAL_T)

    def attend(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, query_block: int) -> torch.Tensor:
        """The block's output for the frames ``x`` (B, C, L) when the whole sequence has ``keys``/``values``
        (B, 1, T, C): exact global attention with the queries taken ``query_block`` at a time, so the scores
        need O(query_block · T) memory instead of O(L · T)."""
        queries = self.project(x)[0]
        parts = [F.scaled_dot_product_attention(queries[:, :, i : i + query_block], keys, values)
                 for i in range(0, queries.shape[2], query_block)]
        return self.combine(x, torch.cat(parts, dim=2) if len(parts) > 1 else parts[0])


class Upsample(nn.Module):
    """Repeat every frame twice, then a 3-tap conv: doubles the time resolution."""

    def __init__(self, channels: int, ops: Any) -> None:
        super().__init__()
        self.conv = mp_conv(ops, channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest-exact"))


class Downsample(nn.Module):
    """1x1 conv, average pooling by 2, 1x1 conv: halves the time resolution (odd tails are dropped)."""

    def __init__(self, channels: int, ops: Any) -> None:
        super().__init__()
        self.conv1 = mp_conv(ops, channels, channels, 1)
        self.conv2 = mp_conv(ops, channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.avg_pool1d(self.conv1(x), kernel_size=2, stride=2))
