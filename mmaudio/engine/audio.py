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

from ..audio_input import encode_audio, encode_audio_memory
from ..decoder import AudioDecoder
from ..errors import IncompatibleComponentsError, InvalidInputError
from ..media.audio import resampled_length
from ..modes import MODES, mode_words
from ..sampling import StepProjection, flow_time_grid, state_at
from .latents import AudioLatents, RegenerateRange
from .runtime import Placed, Runtime

EDGE_FRAMES = 2  # latent frames an encoded clip may fall short of the soundtrack without being an extension


@dataclass(frozen=True)
class AudioStart:
    """Where the sampler starts for one generation: the time grid, the first state, and what to do after each step.
    ``mask`` [T] (1: generated, 0: the input's latents returned exactly) is set when part of the input is kept."""

    grid: torch.Tensor
    state: torch.Tensor
    project: StepProjection | None
    source: torch.Tensor | None  # VAE latents [rows, T, C], padded to T, to put back where the mask is 0
    mask: torch.Tensor | None
    original: torch.Tensor | None = None  # the input as the decoder should render the kept part (up to T frames)

    @property
    def keep(self) -> torch.Tensor | None:
        return None if self.mask is None else self.mask == 0


def check_denoise(denoise: float, has_source: bool) -> None:
    """``denoise`` below 1 keeps part of an input: there must be one."""
    if not has_source and denoise != 1:
        raise InvalidInputError(f"denoise: {denoise:g} needs input audio to start from (its latents); without "
                                "input audio, use 1")


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
    check_denoise(denoise, source is not None)
    if source is None:
        return AudioStart(flow_time_grid(steps), noise, None, None, None)
    if not 0 <= denoise <= 1:
        raise InvalidInputError(f"denoise: expected a number from 0 to 1, got {denoise!r}")
    rows, total = noise.shape[0], noise.shape[1]
    extends = regenerate is not None and regenerate.end is None
    if not extends and 0 < total - source.shape[1] <= EDGE_FRAMES:
        # Audio of exactly the soundtrack's length encodes to a frame or two fewer (the mel's edge frames): hold
        # the last one rather than refuse.
        source = torch.cat([source, source[:, -1:].expand(-1, total - source.shape[1], -1)], dim=1)
    available = source.shape[1]
    mask = regenerate_mask(regenerate, total, available, mode, duration).to(noise.device)
    padded = _fit(source, total).to(device=noise.device, dtype=torch.float32).expand(rows, -1, -1)
    if denoise < 1 and bool((mask[min(available, total):] > 0).any()):
        raise InvalidInputError(f"denoise: {denoise:g} keeps part of the input everywhere, but the soundtrack "
                                "runs past the input audio (extension); use denoise 1 to generate the new part")
    original = source[:, :total]
    if denoise == 0:
        return AudioStart(flow_time_grid(steps), noise, None, padded, torch.zeros_like(mask), original)
    grid = flow_time_grid(steps, denoise)
    data = normalize(padded)
    state = noise if grid[0] == 0 else state_at(grid[0], noise, data)
    project = None
    if regenerate is not None:
        weight = mask[None, :, None]

        def project(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return weight * x + (1 - weight) * state_at(t, noise, data)

    if regenerate is None:
        return AudioStart(grid, state, None, None, None)
    return AudioStart(grid, state, project, padded, mask, original)


def _fit(source: torch.Tensor, total: int) -> torch.Tensor:
    """``source`` cut to ``total`` frames, or padded with zeros (frames a mask generates anyway)."""
    if source.shape[1] >= total:
        return source[:, :total]
    pad = source.new_zeros(source.shape[0], total - source.shape[1], source.shape[2])
    return torch.cat([source, pad], dim=1)


# ---- the encode-audio stage --------------------------------------------------------------------------------------
def encode_audio_latents(decoder: Placed[AudioDecoder], waveform: torch.Tensor, sample_rate: int, runtime: Runtime,
                         *, label: str = "input audio") -> AudioLatents:
    """Any audio (ComfyUI's AUDIO layout, any rate and channels) -> the VAE latents of the decoder's mode: mono,
    band-limited resampling, the reference's mel front-end, the VAE encoder's posterior mean (deterministic, so
    the same audio always gives the same latents). Long audio is encoded in chunks."""
    model = decoder.module
    batch = 1 if waveform.ndim == 2 else int(waveform.shape[0])
    memory = encode_audio_memory(model, int(waveform.shape[-1]), sample_rate, batch=batch, dtype=decoder.dtype)
    runtime.plan({"encoding": 1})
    with runtime.stage("encoding", [decoder], memory), torch.inference_mode():
        posterior = encode_audio(model, waveform, sample_rate, device=decoder.device,
                                 progress=lambda done, total: runtime.progress("encoding", done, total))
    latents = posterior.mean.float().cpu()
    duration = resampled_length(int(waveform.shape[-1]), int(sample_rate), model.sample_rate) / model.sample_rate
    return AudioLatents(latents=latents, mode=model.mode, duration=duration, seeds=(),
                        prompts=(label,) * latents.shape[0])
