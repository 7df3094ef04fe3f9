"""Audio as input: audio-to-audio (``denoise``), regenerating a time range (inpainting), and extension.

The sampler can start from existing latents instead of noise. With ``denoise`` d it starts at the time t0 of the
flow where d of the way is left (``mmaudio.sampling.flow_time_grid``), from x_t0 = (1 - t0) noise + t0 x_in, the
reference's straight path between noise and data (x_in: the input latents in the network's normalised space).
d = 1 starts from noise alone (plain generation, same seed, same result); d = 0 returns the input unchanged.

A :class:`RegenerateRange` marks the frames to generate again (mask 1) and those to keep (mask 0), with raised-
cosine edges of ``fade`` seconds inside the range. After every step the kept frames are put back on their own
path, x_t = (1 - t) noise + t x_in with the same noise, so at t = 1 they are the input's latents and the new part
has been generated against them all along: the seams need no cross-fade. Frames past the input's end (a video
longer than its soundtrack) are generated: that is extension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import IncompatibleComponentsError, InvalidInputError
from ..modes import MODES, mode_words
from ..sampling import StepProjection, flow_time_grid, state_at

EDGE_FRAMES = 2  # latent frames an encoded clip may fall short of the soundtrack without being an extension


@dataclass(frozen=True)
class RegenerateRange:
    """Seconds ``start`` to ``end`` (None: to the end of the soundtrack, past the input audio if it is shorter) are
    generated again; the rest is kept. ``fade``: seconds of soft edge inside the range, at each inner end."""

    start: float
    end: float | None = None
    fade: float = 0.1

    def __post_init__(self) -> None:
        if not (isinstance(self.start, (int, float)) and math.isfinite(self.start) and self.start >= 0):
            raise InvalidInputError(f"start: expected seconds >= 0, got {self.start!r}")
        if self.end is not None and not (isinstance(self.end, (int, float)) and math.isfinite(self.end)
                                         and self.end > self.start):
            raise InvalidInputError(f"end: expected seconds after start ({self.start:g} s), or 0 for the end of "
                                    f"the soundtrack, got {self.end!r}")
        if not (isinstance(self.fade, (int, float)) and math.isfinite(self.fade) and self.fade >= 0):
            raise InvalidInputError(f"fade: expected seconds >= 0, got {self.fade!r}")
        if self.end is not None and 2 * self.fade > self.end - self.start:
            raise InvalidInputError(f"fade: {self.fade:g} s at each edge needs a range of at least "
                                    f"{2 * self.fade:g} s; the range {self.start:g}-{self.end:g} s is "
                                    f"{self.end - self.start:g} s")

    def describe(self) -> str:
        end = "the end" if self.end is None else f"{self.end:g} s"
        return f"{self.start:g} s to {end} (fade {self.fade:g} s)"


@dataclass(frozen=True)
class AudioStart:
    """Where the sampler starts for one generation: the time grid, the first state, and what to do after each step.
    ``mask`` [T] (1: generated, 0: the input's latents returned exactly) is set when part of the input is kept."""

    grid: torch.Tensor
    state: torch.Tensor
    project: StepProjection | None
    source: torch.Tensor | None  # VAE latents [rows, T, C], padded to T, to put back where the mask is 0
    mask: torch.Tensor | None

    @property
    def keep(self) -> torch.Tensor | None:
        return None if self.mask is None else self.mask == 0


def check_source(latents: torch.Tensor, mode: str, network_mode: str, rows: int) -> None:
    """Input latents the network can start from: its mode, finite, one row or one per generation row."""
    if mode != network_mode:
        raise IncompatibleComponentsError(
            f"latents: the input audio was encoded for {mode_words(mode)} but the network is a "
            f"{mode_words(network_mode)} model; encode it with the decoder of the network's mode")
    if latents.ndim != 3 or latents.shape[-1] != MODES[mode].latent_dim:
        raise InvalidInputError(f"latents: expected [batch, frames, {MODES[mode].latent_dim}], got "
                                f"{list(latents.shape)}")
    if latents.shape[0] not in (1, rows):
        raise InvalidInputError(f"latents: {latents.shape[0]} input rows for {rows} generations; give one row "
                                "(used for every generation) or one per generation")
    if not bool(torch.isfinite(latents).all()):
        raise InvalidInputError("latents: the input holds NaN or infinite values; encode the audio again")


def regenerate_mask(regenerate: RegenerateRange | None, total: int, available: int, mode: str,
                    duration: float) -> torch.Tensor:
    """[total] float32: 1 where frames are generated, 0 where the input is kept, raised-cosine in between."""
    rate = MODES[mode].latent_rate
    mask = torch.zeros(total, dtype=torch.float64)
    if regenerate is not None:
        if regenerate.start >= duration:
            raise InvalidInputError(f"start: {regenerate.start:g} s is at or after the end of the {duration:g} s "
                                    "soundtrack")
        if regenerate.end is not None and regenerate.end > duration + 1 / rate:
            raise InvalidInputError(f"end: {regenerate.end:g} s is after the end of the {duration:g} s soundtrack")
        first = min(total, round(regenerate.start * rate))
        last = total if regenerate.end is None else min(total, round(regenerate.end * rate))
        if last > available and regenerate.end is not None:
            raise InvalidInputError(
                f"end: the input audio covers {available / rate:.2f} s, but the range to regenerate ends at "
                f"{regenerate.end:g} s; set end to 0 to regenerate to the end (and past the audio: extension)")
        mask[first:last] = 1.0
        ramp = min(round(regenerate.fade * rate), (last - first) // 2)
        if ramp > 0:
            rise = torch.sin((torch.arange(ramp, dtype=torch.float64) + 0.5) / ramp * (math.pi / 2)) ** 2
            if first > 0:
                mask[first:first + ramp] = rise
            if last < total:
                mask[last - ramp:last] = rise.flip(0)
    if available < total:
        if regenerate is None or regenerate.end is not None:
            raise InvalidInputError(
                f"latents: the input audio covers {available / rate:.2f} s but the soundtrack is {duration:g} s; "
                f"to extend it, regenerate from {available / rate:.2f} s to the end (MMAudio Regenerate Range with "
                "end 0, or --regenerate START 0)")
        if regenerate.start > available / rate:
            raise InvalidInputError(f"start: {regenerate.start:g} s is after the end of the input audio "
                                    f"({available / rate:.2f} s); an extension must start inside the audio")
        mask[available:] = 1.0
    return mask.to(torch.float32)


def audio_start(noise: torch.Tensor, source: torch.Tensor | None, normalize, *, steps: int, denoise: float,
                regenerate: RegenerateRange | None, mode: str, duration: float) -> AudioStart:
    """The grid, the first state and the per-step projection of a generation from ``noise`` [rows, T, C]
    and optional input latents ``source`` (VAE space, [1 or rows, T_in, C]); ``normalize`` maps VAE latents to
    the network's space."""
    if source is None:
        if denoise != 1:
            raise InvalidInputError(f"denoise: {denoise:g} needs input latents (connect encoded audio to the "
                                    "sampler's latents input); without them, use 1")
        return AudioStart(flow_time_grid(steps), noise, None, None, None)
    if not 0 <= denoise <= 1:
        raise InvalidInputError(f"denoise: expected a number from 0 to 1, got {denoise!r}")
    rows, total = noise.shape[0], noise.shape[1]
    if regenerate is None and 0 < total - source.shape[1] <= EDGE_FRAMES:
        # Audio of exactly the soundtrack's length encodes to a frame or two fewer (the mel's edge frames): hold
        # the last one rather than refuse.
        source = torch.cat([source, source[:, -1:].expand(-1, total - source.shape[1], -1)], dim=1)
    available = source.shape[1]
    mask = regenerate_mask(regenerate, total, available, mode, duration).to(noise.device)
    padded = _fit(source, total).to(device=noise.device, dtype=torch.float32).expand(rows, -1, -1)
    if denoise < 1 and bool((mask[min(available, total):] > 0).any()):
        raise InvalidInputError(f"denoise: {denoise:g} keeps part of the input everywhere, but the soundtrack "
                                "runs past the input audio (extension); use denoise 1 to generate the new part")
    if denoise == 0:
        return AudioStart(flow_time_grid(steps), noise, None, padded, torch.zeros_like(mask))
    grid = flow_time_grid(steps, denoise)
    data = normalize(padded)
    state = noise if grid[0] == 0 else state_at(grid[0], noise, data)
    project = None
    if regenerate is not None:
        weight = mask[None, :, None]

        def project(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return weight * x + (1 - weight) * state_at(t, noise, data)

    return AudioStart(grid, state, project, padded if regenerate is not None else None,
                      mask if regenerate is not None else None)


def _fit(source: torch.Tensor, total: int) -> torch.Tensor:
    """``source`` cut to ``total`` frames, or padded with zeros (frames a mask generates anyway)."""
    if source.shape[1] >= total:
        return source[:, :total]
    pad = source.new_zeros(source.shape[0], total - source.shape[1], source.shape[2])
    return torch.cat([source, pad], dim=1)
