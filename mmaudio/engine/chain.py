"""The whole job in one call, for hosts that run it at once (command line, benchmark, tests): the same three
stages the ComfyUI nodes run one per node."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .conditions import EncodedConditions, VisualSource, encode_conditions, requested_seconds
from .decoding import decode_audio
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


def check_request(request: GenerationRequest) -> None:
    """Everything about a request that can be refused before a model is loaded (the prompt syntax, the
    duration; the sampling settings check themselves when made)."""
    parse_prompts(request.prompt, request.negative_prompt)
    requested_seconds(request.duration)


def generate(models: LoadedModels, source: VisualSource | None, request: GenerationRequest,
             runtime: Runtime) -> GenerationResult:
    """Encode, sample, decode."""
    prompts = parse_prompts(request.prompt, request.negative_prompt)
    conditions = encode_conditions(models.features, source, prompts, duration=request.duration,
                                   mask_away_clip=request.mask_away_clip, runtime=runtime, mode=models.mode,
                                   windows=request.windows)
    latents = sample_latents(models.network, conditions, request.sampling, runtime)
    waveform = decode_audio(models.decoder, latents, runtime)
    return GenerationResult(waveform=waveform, sample_rate=latents.sample_rate, conditions=conditions,
                            seeds=latents.seeds, prompts=latents.prompts)
