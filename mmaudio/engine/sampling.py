"""The sampling stage: encoded conditions -> VAE latents, for every prompt row and sample, one pass or windows.

One pass (the conditions' window plan is a single pass) is exactly the reference's generation. With windows, the
noise is drawn once for the whole timeline; at every Euler step each window's guided velocity is computed (groups
of windows in one batched forward, both guidance branches together) and the overlaps are blended
(``windows.blend_weights``), so the whole timeline follows one trajectory.

Seeds: row ``p * samples + k`` (prompt p, sample k) uses seed + k, from a CPU generator, so a seed gives the same
audio on any device and each prompt line gets the same noise.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import IncompatibleComponentsError, InvalidInputError, MMAudioError
from ..model import winograd
from ..model.block_streaming import is_streaming
from ..model.compiled import compiled_flow
from ..model.network import MMAudioNetwork
from ..model.sequence_config import SequenceLengths
from ..modes import MODES
from ..sampling import (
    DEFAULT_CFG,
    DEFAULT_STEPS,
    build_conditions,
    euler_sample,
    guided_velocity,
    initial_noise,
    sample,
)
from .audio import AudioStart, audio_start, check_source
from .conditions import EncodedConditions
from .latents import AudioLatents
from .runtime import Placed, Runtime
from .windows import blend_weights, on_grid_of

log = logging.getLogger(__name__)

MAX_SEED = 2**64 - 1
WINDOWS_PER_FORWARD = 8  # windows of one row set evaluated in one batched forward


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample: checked when made, so a bad value is refused before any model is loaded."""

    seed: int = 0
    steps: int = DEFAULT_STEPS
    cfg: float = DEFAULT_CFG
    samples: int = 1
    compile: str = "off"
    denoise: float = 1.0  # with input latents: how much of the way from noise to redo (1: all, 0: none)

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise InvalidInputError(f"seed: expected an integer from 0 to {MAX_SEED} (2^64 - 1), got {self.seed!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise InvalidInputError(f"steps: expected a whole number of at least 1, got {self.steps!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise InvalidInputError(f"samples: expected a whole number of at least 1, got {self.samples!r}")
        if isinstance(self.cfg, bool) or not isinstance(self.cfg, (int, float)) or not math.isfinite(self.cfg) \
                or self.cfg < 0:
            raise InvalidInputError(f"cfg: expected a finite number >= 0 (below 1: no guidance), got {self.cfg!r}")
        if isinstance(self.denoise, bool) or not isinstance(self.denoise, (int, float)) \
                or not 0 <= self.denoise <= 1:
            raise InvalidInputError(f"denoise: expected a number from 0 to 1, got {self.denoise!r}")
        if self.seed + self.samples - 1 > MAX_SEED:
            raise InvalidInputError(f"seed: {self.seed} + {self.samples} samples runs past the largest seed "
                                    f"{MAX_SEED}; use a smaller seed")


def check_pairing(network: MMAudioNetwork, conditions: EncodedConditions) -> SequenceLengths:
    """The network's sequence lengths for one window of ``conditions``, or a clear error if they cannot pair."""
    mode = network.config.mode
    plan = conditions.windows
    lengths = SequenceLengths.for_duration(plan.window_duration, mode)
    for name, features, length in (("clip", conditions.clip_features, lengths.clip_seq_len),
                                   ("sync", conditions.sync_features, lengths.sync_seq_len)):
        if features is not None and (features.shape[0] != plan.num_windows or features.shape[1] != length):
            raise IncompatibleComponentsError(
                f"the conditions hold {name} features of shape {list(features.shape[:2])}, but {plan.num_windows} "
                f"window(s) of {plan.window_duration:g} s need [{plan.num_windows}, {length}]; encode them again"
            )
    return lengths


def sampling_memory(net: MMAudioNetwork, lengths: SequenceLengths, batch: int, dtype: torch.dtype,
                    device: torch.device) -> int:
    """Bytes one guided step needs beyond the weights: the network's activations for both guidance branches,
    plus what the CPU fast path keeps while sampling (0 elsewhere)."""
    activations = net.activation_memory(2 * batch, lengths.latent_seq_len, lengths.clip_seq_len, dtype)
    return activations + winograd.expected_filter_bytes(net, device, dtype)


def sample_latents(network: Placed[MMAudioNetwork], conditions: EncodedConditions, settings: SamplingSettings,
                   runtime: Runtime, source: AudioLatents | None = None) -> AudioLatents:
    """Euler flow sampling of every prompt row of ``conditions`` times ``settings.samples``; from ``source``'s
    latents (audio-to-audio, regenerating a range of them, extending them) when given (see ``audio.py``)."""
    net = network.module
    lengths = check_pairing(net, conditions)
    plan = on_grid_of(conditions.windows, net.config.mode)
    if plan is not conditions.windows:
        log.info("MMAudio: the conditions' windows were planned on the %s latent grid; moved to the network's %s "
                 "grid (each within half a latent frame). Connect the network to the encode node to plan them "
                 "there exactly.", MODES[conditions.windows.mode].words, MODES[plan.mode].words)
        conditions = dataclasses.replace(conditions, windows=plan)
    rows = conditions.num_rows * settings.samples
    total = lengths.latent_seq_len if plan.is_single else plan.total_latents
    if source is not None:
        check_source(source.latents, source.mode, net.config.mode, rows)
    noise = _row_noise(settings, conditions.num_rows, total, net.latent_dim).to(network.device)
    start = audio_start(noise, None if source is None else source.latents, net.normalize, steps=settings.steps,
                        denoise=settings.denoise, regenerate=None if source is None else source.regenerate,
                        mode=net.config.mode, duration=plan.duration)
    if source is not None and settings.denoise == 0:
        latents = start.source.cpu()
        runtime.plan({"sampling": 1})
        runtime.progress("sampling", 1, 1)
    else:
        per_forward = rows if plan.is_single else rows * min(WINDOWS_PER_FORWARD, plan.num_windows)
        runtime.plan({"sampling": settings.steps * plan.num_windows})
        memory = sampling_memory(net, lengths, per_forward, network.dtype, network.device)
        with runtime.stage("sampling", [network], memory), torch.inference_mode():
            if settings.compile != "off" and is_streaming(net):
                raise InvalidInputError(
                    f"compile={settings.compile!r}: the network's blocks are streamed (low-VRAM mode), which a "
                    "compiled network cannot follow; use compile='off' or a runtime that does not stream")
            net.update_seq_lengths(lengths.latent_seq_len, lengths.clip_seq_len, lengths.sync_seq_len)
            if plan.is_single:
                x1 = _sample_one_pass(network, conditions, settings, start, runtime)
            else:
                x1 = _sample_windows(network, conditions, settings, start, runtime)
            latents = net.unnormalize(x1.float()).cpu()
        if not bool(torch.isfinite(latents).all()):
            raise MMAudioError(
                "the network produced NaN or infinite latents: its weights may be broken, or half precision "
                "overflowed; load the network with precision fp32 (or bf16) and try again")
        if start.keep is not None:  # the kept frames are the input's, exactly
            latents = torch.where(start.keep.cpu()[None, :, None], start.source.cpu(), latents)
    samples = settings.samples
    labels = conditions.prompts.labels()
    kept = source is not None and start.mask is not None and bool(start.keep.any())
    return AudioLatents(
        latents=latents, mode=net.config.mode, duration=plan.duration,
        seeds=tuple(settings.seed + k for _ in labels for k in range(samples)),
        prompts=tuple(label for label in labels for _ in range(samples)),
        original=start.original.cpu() if kept else None, mask=start.mask.cpu() if kept else None,
    )


def _row_noise(settings: SamplingSettings, prompt_rows: int, length: int, latent_dim: int) -> torch.Tensor:
    """[prompt_rows * samples, length, latent_dim]: sample k of every prompt row from seed + k."""
    return torch.cat([initial_noise(settings.seed, settings.samples, length, latent_dim) for _ in range(prompt_rows)])


def _sample_one_pass(network: Placed[MMAudioNetwork], conditions: EncodedConditions, settings: SamplingSettings,
                     start: AudioStart, runtime: Runtime) -> torch.Tensor:
    net, device, dtype = network.module, network.device, network.dtype
    samples = settings.samples
    texts = conditions.text_features[conditions.text_index[:, 0]]
    negative = _negative_rows(conditions, conditions.negative_index[:, 0], net)
    cond, empty = build_conditions(
        net, clip_f=_first(conditions.clip_features), sync_f=_first(conditions.sync_features),
        text_f=_repeat_rows(texts, samples), negative_text_f=_repeat_rows(negative, samples),
        batch_size=conditions.num_rows * samples, dtype=dtype, device=device)
    with winograd.fast_path_for(net, device, dtype):
        return sample(net, start.state, cond, empty if settings.cfg >= 1.0 else None, num_steps=settings.steps,
                      cfg_strength=settings.cfg, compile=settings.compile, grid=start.grid, project=start.project,
                      callback=lambda k, total, _x: runtime.progress("sampling", k + 1, total))


def _first(features: torch.Tensor | None) -> torch.Tensor | None:
    return None if features is None else features[:1]


def _repeat_rows(x: torch.Tensor | None, samples: int) -> torch.Tensor | None:
    if x is None or x.shape[0] == 1:
        return x
    return x.repeat_interleave(samples, dim=0)


def _negative_rows(conditions: EncodedConditions, index: torch.Tensor, net: MMAudioNetwork) -> torch.Tensor | None:
    """The negative text of each row (the model's unconditional text where index is -1); None if all are."""
    if conditions.negative_features is None or bool((index < 0).all()):
        return None
    negatives = conditions.negative_features
    if bool((index == index[0]).all()) and negatives.shape[0] == 1:
        return negatives  # one negative for every row: kept at batch 1, as a single prompt's would be
    empty = net.empty_string_feat.detach().float().cpu().unsqueeze(0)
    table = torch.cat([negatives, empty])
    return table[torch.where(index < 0, negatives.shape[0], index)]


# ---- windows -------------------------------------------------------------------------------------------------
def _sample_windows(network: Placed[MMAudioNetwork], conditions: EncodedConditions, settings: SamplingSettings,
                    start: AudioStart, runtime: Runtime) -> torch.Tensor:
    """One trajectory over the whole timeline; each step blends the windows' guided velocities."""
    net, device, dtype = network.module, network.device, network.dtype
    plan = conditions.windows
    length = plan.window_latents
    weights = blend_weights(plan).to(device)  # [W, L]
    coverage = torch.zeros(plan.total_latents, device=device)
    for k, first in enumerate(plan.starts):
        coverage[first:first + length] += weights[k]
    groups = [list(range(first, min(first + WINDOWS_PER_FORWARD, plan.num_windows)))
              for first in range(0, plan.num_windows, WINDOWS_PER_FORWARD)]
    velocities = [_group_velocity(net, conditions, group, settings, device, dtype) for group in groups]
    rows = conditions.num_rows * settings.samples
    total_units = settings.steps * plan.num_windows
    step = [0]

    def velocity(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        blended = torch.zeros_like(x)
        done = step[0] * plan.num_windows
        for group, group_velocity in zip(groups, velocities, strict=True):
            pieces = torch.cat([x[:, plan.starts[k]:plan.starts[k] + length] for k in group])
            v = group_velocity(t, pieces).reshape(len(group), rows, length, -1)
            for j, k in enumerate(group):
                first = plan.starts[k]
                blended[:, first:first + length] += weights[k][None, :, None] * v[j]
            done += len(group)
            runtime.progress("sampling", done, total_units)
        step[0] += 1
        return blended / coverage[None, :, None]

    with winograd.fast_path_for(net, device, dtype):
        try:
            return euler_sample(velocity, start.state, settings.steps, grid=start.grid, project=start.project)
        finally:
            net.release_device_caches()


def _group_velocity(net: MMAudioNetwork, conditions: EncodedConditions, group: Sequence[int],
                    settings: SamplingSettings, device: torch.device, dtype: torch.dtype
                    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The guided velocity of a group of windows for every row: batch order (window, row)."""
    samples = settings.samples
    windows = torch.tensor(list(group), dtype=torch.long)
    rows = conditions.num_rows * samples

    def per_window(features: torch.Tensor | None) -> torch.Tensor | None:
        if features is None:
            return None
        return features[windows].repeat_interleave(rows, dim=0)

    text_index = conditions.text_index[:, windows].T.repeat_interleave(samples, dim=1).reshape(-1)
    negative_index = conditions.negative_index[:, windows].T.repeat_interleave(samples, dim=1).reshape(-1)
    texts = conditions.text_features[text_index]
    negative = _negative_rows(conditions, negative_index, net)
    cond, empty = build_conditions(
        net, clip_f=per_window(conditions.clip_features), sync_f=per_window(conditions.sync_features),
        text_f=texts, negative_text_f=negative, batch_size=len(group) * rows, dtype=dtype, device=device)
    return guided_velocity(net, cond, empty if settings.cfg >= 1.0 else None, settings.cfg,
                           flow=compiled_flow(net, settings.compile))
