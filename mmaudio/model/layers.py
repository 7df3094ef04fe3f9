"""Small layers of the flow network: channel-last convolutions, SwiGLU MLPs, per-head RMS norm.

Every weight-bearing layer comes from the ``ops`` namespace (see ``mmaudio/ops.py``) so ComfyUI can cast and
offload it; the few bare parameters are cast to the activations' dtype and device where they are used.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import swiglu_hidden_dim


def cast_like(param: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A bare parameter in the dtype and on the device of the activations (weights may be stored narrower)."""
    if param.dtype == like.dtype and param.device == like.device:
        return param
    return param.to(device=like.device, dtype=like.dtype)


@cache
def _channel_last_class(conv_cls: type) -> type:
    """A subclass of ``conv_cls`` (an ops Conv1d) that takes and returns [B, L, C] tensors."""

    class ChannelLastConv1d(conv_cls):  # type: ignore[misc, valid-type]
        """Conv1d over the token axis of a channel-last sequence; parameter names are those of Conv1d.

        ``per_step`` marks the layers a sampler runs at every step (what a step-level fast path may replace).
        """

        per_step = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return super().forward(x.transpose(1, 2)).transpose(1, 2)

    ChannelLastConv1d.__qualname__ = f"ChannelLast{conv_cls.__name__}"
    return ChannelLastConv1d


def channel_last_conv1d(ops: Any, in_dim: int, out_dim: int, kernel_size: int, *, bias: bool = True,
                        per_step: bool = False) -> nn.Module:
    """A "same"-padded Conv1d applied to [B, L, C] sequences (``per_step``: run at every sampler step)."""
    cls = _channel_last_class(ops.Conv1d)
    layer = cls(in_dim, out_dim, kernel_size=kernel_size, padding=kernel_size // 2, bias=bias)
    layer.per_step = per_step
    return layer


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x) without biases, as Linear layers (kernel_size 1) or channel-last convolutions.

    ``nominal_hidden`` is dim * ratio; the real width is two thirds of it rounded up to a multiple of 256.
    ``per_step`` marks the MLPs a sampler runs at every step (what a step-level fast path may replace).
    """

    def __init__(self, dim: int, nominal_hidden: int, ops: Any, kernel_size: int = 1, *,
                 per_step: bool = False) -> None:
        super().__init__()
        hidden = swiglu_hidden_dim(nominal_hidden)
        self.per_step = per_step
        self.kernel_size = kernel_size
        if kernel_size == 1:
            self.w1 = ops.Linear(dim, hidden, bias=False)
            self.w2 = ops.Linear(hidden, dim, bias=False)
            self.w3 = ops.Linear(dim, hidden, bias=False)
        else:
            self.w1 = channel_last_conv1d(ops, dim, hidden, kernel_size, bias=False)
            self.w2 = channel_last_conv1d(ops, hidden, dim, kernel_size, bias=False)
            self.w3 = channel_last_conv1d(ops, dim, hidden, kernel_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class HeadRMSNorm(nn.Module):
    """RMS norm over the head dimension with a learned weight, computed in float32.

    The reference gives no eps, so torch uses the machine epsilon of the float32 computation (also for
    bfloat16 inputs, which torch upcasts).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(device=x.device, dtype=torch.float32)
        out = F.rms_norm(x.float(), (x.shape[-1],), weight, eps=torch.finfo(torch.float32).eps)
        return out.to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation: x * (1 + scale) + shift."""
    return x * (1 + scale) + shift
