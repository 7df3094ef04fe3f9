"""Magnitude-preserving primitives of the EDM2-style autoencoder (Karras et al. 2024).

The VAE was trained with "forced" weight normalization: every conv weight is stored raw and only its
direction matters. Inference uses the normalized weights, so we normalize them once at load time
(:func:`mp_normalized_weight`) instead of on every call.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# The activation divisor that keeps SiLU's output at unit variance for unit-variance input (EDM2 eq. 81).
MP_SILU_DIVISOR = 0.596
NORM_EPS = 1e-4


def channel_normalize(x: torch.Tensor, dim: int, eps: float = NORM_EPS) -> torch.Tensor:
    """Scale ``x`` to unit RMS along ``dim`` (norm taken in float32, as the reference does).

    ``x / (eps + ||x||_dim / sqrt(size of dim))``: the "pixel norm" of the resnet blocks and the q/k/v norm of
    the attention block.
    """
    accumulate = torch.float64 if x.dtype == torch.float64 else torch.float32
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=accumulate)
    norm = torch.add(eps, norm, alpha=math.sqrt(1.0 / x.shape[dim]))
    return x / norm.to(x.dtype)


def mp_silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU rescaled to preserve magnitude."""
    return F.silu(x) / MP_SILU_DIVISOR


def mp_sum(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Weighted sum ``(1-t)·a + t·b`` rescaled so two unit-magnitude inputs give a unit-magnitude output."""
    return torch.lerp(a, b, t) / math.sqrt((1.0 - t) ** 2 + t**2)


def mp_normalized_weight(weight: torch.Tensor) -> torch.Tensor:
    """The inference weight of a raw magnitude-preserving conv weight ``[out, in, k]``, in float32.

    Per output channel o, with fan_in = in·k: ``w_o / (eps + ||w_o|| / sqrt(fan_in)) / sqrt(fan_in)``, i.e.
    each row gets unit norm (up to eps).
    """
    w = weight.to(torch.float32)
    fan_in = w[0].numel()
    norm = torch.linalg.vector_norm(w, dim=tuple(range(1, w.ndim)), keepdim=True)
    norm = torch.add(NORM_EPS, norm, alpha=math.sqrt(1.0 / fan_in))
    return w / norm / math.sqrt(fan_in)
