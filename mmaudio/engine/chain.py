"""The whole job in one call, for hosts that run it at once (command line, benchmark, tests): the same three
stages the ComfyUI nodes run one per node."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from ..errors import InvalidInputError
from .audio import check_denoise, encode_audio_latents
from .conditions import EncodedConditions, VisualSource, encode_conditions, requested_seconds
from .decoding import decode_audio
from .latents import RegenerateRange
from .loading import LoadedModels
from .prompts import parse_prompts
from .runtime import Runtime
from .sampling import SamplingSettings, sample_latents
from .windows import WindowSettings


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate, as a user states it (checked before any model is loaded: see :func:`check_request`)."""

    prompt: str = ""
    negative_prompt: str = ""
    duration: float | None = None  # None or 0: the clip's length (the training length without a clip)
    mask_away_clip: bool = False
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    windows: WindowSettings = field(default_factory=WindowSettings)
    audio: tuple[torch.Tensor, int] | None = None  # input audio (waveform [C, T] or [B, C, T], sample rate)
    regenerate: RegenerateRange | None = None  # with audio: the part generated again (None: all, by denoise)


@dataclass(frozen=True)
class GenerationResult:
    """Float32 waveforms [B, 1, samples] on the CPU at ``sample_rate``, and what produced them."""

    waveform: torch.Tensor
    sample_rate: int
    conditions: EncodedConditions
    seeds: tuple[int, ...]
    prompts: tuple[str, ...]

    @property
    def duration(self) -> float:
        return self.conditions.duration


def check_request(request: GenerationRequest, *, audio_given: bool | None = None) -> None:
    """Everything about a request that can be refused before a model is loaded (the prompt syntax, the
    duration, options that need input audio; the sampling settings check themselves when made).
    ``audio_given``: whether input audio will come (when the request does not hold it yet)."""
    parse_prompts(request.prompt, request.negative_prompt)
    requested_seconds(request.duration)
    has_audio = request.audio is not None if audio_given is None else audio_given
    check_denoise(request.sampling.denoise, has_audio)
    if request.regenerate is not None and not has_audio:
        raise InvalidInputError("regenerate: a range to regenerate needs input audio")


def generate(models: LoadedModels, source: VisualSource | None, request: GenerationRequest,
             runtime: Runtime) -> GenerationResult:
    """Encode, sample, decode."""
    prompts = parse_prompts(request.prompt, request.negative_prompt)
    conditions = encode_conditions(models.features, source, prompts, duration=request.duration,
                                   mask_away_clip=request.mask_away_clip, runtime=runtime, mode=models.mode,
                                   windows=request.windows)
    source = None
    if request.audio is not None:
        waveform, rate = request.audio
        source = encode_audio_latents(models.decoder, waveform, rate, runtime)
        source = dataclasses.replace(source, regenerate=request.regenerate)
    latents = sample_latents(models.network, conditions, request.sampling, runtime, source)
    waveform = decode_audio(models.decoder, latents, runtime)
    return GenerationResult(waveform=waveform, sample_rate=latents.sample_rate, conditions=conditions,
                            seeds=latents.seeds, prompts=latents.prompts)
