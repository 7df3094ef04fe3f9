"""Classifier-free guidance over the flow network, with both branches in one batched forward pass."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .conditions import NetworkConditions

FlowFn = Callable[..., torch.Tensor]  # predict_flow(latent, t[B], conditions, *, branches=1) -> flow


def combine_guidance(cond_flow: torch.Tensor, uncond_flow: torch.Tensor, cfg_strength: float) -> torch.Tensor:
    """cfg * cond + (1 - cfg) * uncond, the reference's form (not uncond + cfg * (cond - uncond))."""
    return cfg_strength * cond_flow + (1 - cfg_strength) * uncond_flow


def guided_flow(predict_flow: FlowFn, latent: torch.Tensor, t: torch.Tensor, conditions: NetworkConditions,
                empty_conditions: NetworkConditions | None, cfg_strength: float, *,
                joint_conditions: NetworkConditions | None = None, batched: bool = True) -> torch.Tensor:
    """Guided velocity at time t [B] (float32) for latent [B, L, C].

    cfg_strength < 1 evaluates the conditional branch only. Otherwise the conditional and unconditional
    branches run as one forward over a doubled batch (``joint_conditions`` may hold the pre-concatenated
    conditions so they are not rebuilt at every step), or as two forwards when ``batched`` is False.
    """
    if cfg_strength < 1.0:
        return predict_flow(latent, t, conditions)
    if empty_conditions is None:
        raise ValueError("cfg_strength >= 1 needs the unconditional (empty) conditions")
    if not batched:
        return combine_guidance(predict_flow(latent, t, conditions), predict_flow(latent, t, empty_conditions),
                                cfg_strength)
    batch = latent.shape[0]
    if joint_conditions is None:
        joint_conditions = NetworkConditions.concat([conditions.expand(batch), empty_conditions.expand(batch)])
    flow = predict_flow(latent, torch.cat([t, t]), joint_conditions, branches=2)  # one input projection
    return combine_guidance(flow[:batch], flow[batch:], cfg_strength)
