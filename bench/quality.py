"""How far one output is from another: relative L2 error, cosine similarity and largest difference."""

from __future__ import annotations

import math
from typing import Any

import torch


def compare(actual: torch.Tensor, expected: torch.Tensor) -> dict[str, Any]:
    """||a - e|| / ||e||, cos(a, e) and max |a - e|, in float64 on the CPU; ``finite`` is False on NaN/inf."""
    a = actual.detach().to(device="cpu", dtype=torch.float64).flatten()
    e = expected.detach().to(device="cpu", dtype=torch.float64).flatten()
    if a.shape != e.shape:
        raise ValueError(f"cannot compare outputs of shapes {tuple(actual.shape)} and {tuple(expected.shape)}")
    finite = bool(torch.isfinite(a).all())
    norm_e = float(e.norm())
    diff = float((a - e).norm())
    denom = float(a.norm()) * norm_e
    return {
        "rel_l2": diff / norm_e if norm_e > 0 else math.inf,
        "cosine": float(a @ e) / denom if denom > 0 else math.nan,
        "max_abs": float((a - e).abs().max()) if a.numel() else 0.0,
        "finite": finite,
    }
