"""The latents that travel between the engine's stages (and between the sampler and decode nodes)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InvalidInputError
from ..modes import MODES


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


@dataclass(frozen=True, eq=False)
class AudioLatents:
    """VAE latents [B, latent frames, latent_dim] (CPU, float32) of a decoder of ``mode``: sampled, or encoded from
    audio. ``regenerate`` (set on input latents) says which part a sampler generates again."""

    latents: torch.Tensor
    mode: str
    duration: float
    seeds: tuple[int, ...]
    prompts: tuple[str, ...]  # the prompt (or what the audio was) of every batch row
    regenerate: RegenerateRange | None = None
    # Set on latents regenerated from input audio: the input's latents (as given, up to the soundtrack's length)
    # and, per frame, 1 where generated and 0 where kept; the decoder splices the input's own decoding there.
    original: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @property
    def sample_rate(self) -> int:
        return MODES[self.mode].sample_rate
