"""Euler flow-matching sampler with classifier-free guidance, as plain functions over a flow network.

Time runs from noise (t = 0) to data (t = 1) on the float32 grid ``torch.linspace(0, 1, steps + 1)``; each
step is x <- x + (t[k+1] - t[k]) * v(t[k], x), so the network is never evaluated at t = 1. The guided velocity
runs the conditional and unconditional branches as one batched forward.

The reference's flow (min_sigma 0) joins noise x0 and data x1 by the straight path x_t = (1 - t) x0 + t x1.
Starting from existing audio (``denoise`` d < 1) therefore means starting at the time t0 of the grid where d of
the way is left, from x_t0 = (1 - t0) noise + t0 data (:func:`state_at`), as ComfyUI's KSampler does: the steps
asked for are the last ones of a grid of ``int(steps / d)`` steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .errors import InvalidInputError
from .model.compiled import compiled_flow
from .model.conditions import NetworkConditions
from .model.guidance import FlowFn, guided_flow
from .model.network import MMAudioNetwork

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (t: 0-d float32, x) -> velocity like x
StepCallback = Callable[[int, int, torch.Tensor], None]  # (step_index, total_steps, x after that step)

DEFAULT_STEPS = 25
DEFAULT_CFG = 4.5
_SEED_MODULUS = 2**64  # torch.Generator seeds are unsigned 64-bit


# ---- noise ---------------------------------------------------------------------------------------------------
def _generator(seed: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidInputError(f"seed must be an integer, got {seed!r}")
    return torch.Generator(device="cpu").manual_seed(seed % _SEED_MODULUS)


def reference_noise(seed: int, shape: tuple[int, ...] | torch.Size, *, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``torch.randn(shape)`` from one CPU generator seeded with ``seed``, as the reference generate() draws
    its initial noise (on a CPU generator), then moved to ``device``/``dtype``."""
    noise = torch.randn(tuple(shape), generator=_generator(seed), dtype=torch.float32, device="cpu")
    return noise.to(device=device, dtype=dtype)


def initial_noise(seed: int, batch_size: int, latent_seq_len: int, latent_dim: int, *,
                  device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Initial noise [batch_size, latent_seq_len, latent_dim]: sample i is drawn from its own CPU generator
    seeded with ``seed + i``, so a seed gives the same audio on any device and whatever the batch size
    (sample i of a batch equals a single run with seed + i; batch 1 equals the reference's draw)."""
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be at least 1, got {batch_size}")
    samples = [reference_noise(seed + i, (1, latent_seq_len, latent_dim)) for i in range(batch_size)]
    return torch.cat(samples, dim=0).to(device=device, dtype=dtype)


# ---- time grid and Euler integration -------------------------------------------------------------------------
def _check_steps(num_steps: int) -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise InvalidInputError(f"steps must be a positive integer, got {num_steps!r}")
    return num_steps


def flow_time_grid(num_steps: int, denoise: float = 1.0) -> torch.Tensor:
    """The float32 times of ``num_steps`` Euler steps: the grid 0 .. 1 (torch.linspace's values, not exactly
    k / N), or with ``denoise`` < 1 the last ``num_steps`` intervals of the grid of ``int(num_steps / denoise)``."""
    steps = _check_steps(num_steps)
    if not 0 < denoise <= 1:
        raise InvalidInputError(f"denoise: expected a number in (0, 1] for a grid of steps, got {denoise!r}")
    total = steps if denoise == 1 else max(steps, int(steps / denoise))
    return torch.linspace(0, 1, total + 1, dtype=torch.float32)[total - steps:]


def state_at(t: torch.Tensor, noise: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """The flow's state at time ``t`` on the straight path from ``noise`` (t = 0) to ``data`` (t = 1)."""
    t = t.to(device=noise.device, dtype=noise.dtype)
    return (1 - t) * noise + t * data


# (time reached, state) -> the state to go on from (e.g. the kept part of an inpainting put back on its path)
StepProjection = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def euler_sample(velocity: VelocityFn, x0: torch.Tensor, num_steps: int, *,
                 callback: StepCallback | None = None, grid: torch.Tensor | None = None,
                 project: StepProjection | None = None) -> torch.Tensor:
    """Integrate dx/dt = velocity(t, x) from x0 at the grid's first time to t = 1 with Euler steps.

    ``grid`` defaults to :func:`flow_time_grid` (from t = 0: x0 is noise). ``project(t, x)`` runs after every step
    on the state just reached. ``callback(step_index, num_steps, x)`` runs after every step with the updated
    state; it may raise to abort.
    """
    grid = flow_time_grid(num_steps) if grid is None else grid
    if grid.numel() != num_steps + 1:
        raise InvalidInputError(f"grid: expected {num_steps + 1} times for {num_steps} steps, got {grid.numel()}")
    x = x0
    for k in range(num_steps):
        t, dt = grid[k], grid[k + 1] - grid[k]  # 0-d float32, as the reference computes them
        x = x + dt.to(x.device) * velocity(t, x)
        if project is not None:
            x = project(grid[k + 1], x)
        if callback is not None:
            callback(k, num_steps, x)
    return x


# ---- guided velocity -----------------------------------------------------------------------------------------
def guided_velocity(net: MMAudioNetwork, conditions: NetworkConditions, empty_conditions: NetworkConditions | None,
                    cfg_strength: float, *, batched: bool = True, flow: FlowFn | None = None) -> VelocityFn:
    """v(t, x) = cfg * flow(x | conditions) + (1 - cfg) * flow(x | empty), or the conditional flow when cfg < 1.

    Both branches go through one forward over a doubled batch (``batched=False`` runs them one after the other,
    for less memory). The network runs in the conditions' dtype; the returned velocity has x's dtype, so the
    Euler state can stay in float32 under a bf16 network. t is passed to the network in float32. ``flow`` replaces
    ``net.predict_flow`` (a compiled forward, see :func:`mmaudio.model.compiled.compiled_flow`).
    """
    if not math.isfinite(cfg_strength):
        raise InvalidInputError(f"cfg must be a finite number, got {cfg_strength!r}")
    compute_dtype = conditions.dtype
    predict_flow = flow or net.predict_flow
    cache: dict[int, NetworkConditions] = {}
    joint_branches = batched and cfg_strength >= 1.0 and empty_conditions is not None
    net.prepare_device_caches(conditions.device)
    if not joint_branches:  # the forwards take these conditions as they are: find their rows now, outside them
        for used in (conditions, empty_conditions if cfg_strength >= 1.0 else None):
            if used is not None:
                used.distinct_sync_rows()

    def velocity(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        latent = x.to(compute_dtype)
        t_batch = t.to(device=x.device, dtype=torch.float32).reshape(1).expand(batch)
        joint = None
        if joint_branches:
            joint = cache.get(batch)
            if joint is None:
                joint = NetworkConditions.concat([conditions.expand(batch), empty_conditions.expand(batch)])
                joint.distinct_sync_rows()
                cache[batch] = joint
        velocity = guided_flow(predict_flow, latent, t_batch, conditions, empty_conditions, cfg_strength,
                               joint_conditions=joint, batched=batched)
        return velocity.to(x.dtype)

    return velocity


def build_conditions(net: MMAudioNetwork, *, clip_f: torch.Tensor | None = None, sync_f: torch.Tensor | None = None,
                     text_f: torch.Tensor | None = None, negative_text_f: torch.Tensor | None = None,
                     mask_away_clip: bool = False, batch_size: int | None = None,
                     dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                     ) -> tuple[NetworkConditions, NetworkConditions]:
    """Conditional and unconditional (empty) conditions for one generation.

    A missing stream uses the network's learned empty features: no video (``clip_f`` and ``sync_f`` None) is
    text-to-audio; ``mask_away_clip`` drops the CLIP features but keeps Synchformer's; no ``text_f`` uses the
    stored empty-prompt feature. ``negative_text_f`` replaces the empty prompt in the unconditional branch.
    """
    given = [x for x in (clip_f, sync_f, text_f) if x is not None]
    if batch_size is None:
        batch_size = given[0].shape[0] if given else 1
    if dtype is None:
        dtype = given[0].dtype if given else net.compute_dtype
    if device is None:
        device = given[0].device if given else net.device
    device = torch.device(device)

    def prepare(x: torch.Tensor | None, empty: Callable[..., torch.Tensor]) -> torch.Tensor:
        if x is None:
            return empty(batch_size, dtype=dtype, device=device)
        if x.shape[0] not in (1, batch_size):
            raise InvalidInputError(f"features have batch {x.shape[0]}, expected 1 or {batch_size}")
        return x.to(device=device, dtype=dtype).expand(batch_size, -1, -1)

    clip = prepare(None if mask_away_clip else clip_f, net.get_empty_clip_sequence)
    sync = prepare(sync_f, net.get_empty_sync_sequence)
    text = prepare(text_f, net.get_empty_string_sequence)
    conditions = net.preprocess_conditions(clip, sync, text)
    negative = None if negative_text_f is None else negative_text_f.to(device=device, dtype=dtype)
    empty = net.get_empty_conditions(batch_size, negative, dtype=dtype, device=device)
    return conditions, empty


def sample(net: MMAudioNetwork, x0: torch.Tensor, conditions: NetworkConditions,
           empty_conditions: NetworkConditions | None, *,
           num_steps: int = DEFAULT_STEPS, cfg_strength: float = DEFAULT_CFG, callback: StepCallback | None = None,
           batched_cfg: bool = True, compile: str = "off", grid: torch.Tensor | None = None,
           project: StepProjection | None = None) -> torch.Tensor:
    """Normalised latents x1 from x0 (noise, or a partly noised start on ``grid``; call ``net.unnormalize``
    before decoding). ``compile``: "off", "compile" or "cuda_graphs" (torch.compile of the network's forward,
    kept for later generations). ``grid`` and ``project`` as in :func:`euler_sample`."""
    _check_steps(num_steps)
    velocity = guided_velocity(net, conditions, empty_conditions, cfg_strength, batched=batched_cfg,
                               flow=compiled_flow(net, compile))
    try:
        return euler_sample(velocity, x0, num_steps, callback=callback, grid=grid, project=project)
    finally:  # also after an error or an interrupt raised by the callback
        net.release_device_caches()
