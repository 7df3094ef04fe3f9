"""Long soundtracks as overlapping windows of the training length, fused into one trajectory at every step.

MMAudio was trained on 8 s clips. Up to a threshold a little above that, a soundtrack is generated in one pass,
exactly as before. Beyond it, the latent timeline is covered by windows of the training length (345 latent frames
at 44.1 kHz, 250 at 16 kHz) that sit on the latent grid: window k holds latent frames ``start_k ..
start_k + L - 1``, stands for the time those frames stand for in a single pass, and is conditioned on the video
of exactly that span. Neighbouring windows overlap by at least ``overlap_s``; at every Euler step each window's
guided velocity is computed and the overlaps are blended with raised-cosine weights that sum to one, so the
timeline follows one trajectory and has no seams.

Why these defaults: 8 s windows are what the network knows; a 2 s overlap (a quarter of a window) gives the
blend 86 latent frames at 44.1 kHz to agree over, enough for sounds to carry across, for 4/3 of the single-pass
compute; the 10 s threshold keeps every clip the model handles well in one pass (Wan's 5 s, LTX's up to 10 s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InvalidInputError
from ..model.config import TRAINING_DURATION_S
from ..model.sequence_config import SequenceLengths
from ..modes import MODES

DEFAULT_OVERLAP_S = 2.0
DEFAULT_THRESHOLD_S = 10.0


@dataclass(frozen=True)
class WindowSettings:
    """When to cut a soundtrack into windows, and how much neighbouring windows share."""

    overlap_s: float = DEFAULT_OVERLAP_S
    threshold_s: float = DEFAULT_THRESHOLD_S

    def __post_init__(self) -> None:
        if not (math.isfinite(self.overlap_s) and 0 < self.overlap_s <= TRAINING_DURATION_S / 2):
            raise InvalidInputError(f"window_overlap: expected seconds in (0, {TRAINING_DURATION_S / 2:g}], "
                                    f"got {self.overlap_s!r}")
        if not (math.isfinite(self.threshold_s) and self.threshold_s >= TRAINING_DURATION_S):
            raise InvalidInputError(f"window threshold: expected at least {TRAINING_DURATION_S:g} s, "
                                    f"got {self.threshold_s!r}")


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows of one soundtrack sit. ``mode`` is None for a single pass (its features fit either
    mode); windowed plans are made on one mode's latent grid."""

    duration: float
    mode: str | None
    total_latents: int  # latent frames of the whole soundtrack (single pass: 0, the network's mode decides)
    window_latents: int  # L
    starts: tuple[int, ...]  # first latent frame of each window

    @property
    def num_windows(self) -> int:
        return len(self.starts)

    @property
    def is_single(self) -> bool:
        return self.mode is None

    @property
    def window_duration(self) -> float:
        """Seconds of conditioning each window gets: the clip's duration, or the training length."""
        return self.duration if self.is_single else TRAINING_DURATION_S

    def start_seconds(self, index: int) -> float:
        """Time of window ``index``'s first latent frame, as a single pass would time it."""
        if self.is_single:
            return 0.0
        return self.starts[index] * MODES[self.mode].samples_per_latent / MODES[self.mode].sample_rate

    def midpoint_seconds(self, index: int) -> float:
        return self.start_seconds(index) + self.window_duration / 2

    def describe(self) -> str:
        if self.is_single:
            return f"one pass of {self.duration:g} s"
        spans = ", ".join(f"{self.start_seconds(k):.2f}" for k in range(min(self.num_windows, 6)))
        more = ", ..." if self.num_windows > 6 else ""
        return (f"{self.num_windows} windows of {TRAINING_DURATION_S:g} s on the {MODES[self.mode].words} latent "
                f"grid, starting at {spans}{more} s")


def plan_windows(duration: float, mode: str, settings: WindowSettings | None = None, *,
                 force: bool = False) -> WindowPlan:
    """One pass up to ``settings.threshold_s`` (unless ``force`` and longer than a window), else windows.

    Windows are spread evenly from the first latent frame to the last, so every overlap is at least
    ``overlap_s`` and the last window ends exactly where the soundtrack does.
    """
    settings = settings or WindowSettings()
    window = SequenceLengths.for_duration(TRAINING_DURATION_S, mode).latent_seq_len
    if duration <= settings.threshold_s and not (force and duration > TRAINING_DURATION_S):
        return WindowPlan(duration=duration, mode=None, total_latents=0, window_latents=0, starts=(0,))
    total = SequenceLengths.for_duration(duration, mode).latent_seq_len
    spec = MODES[mode]
    overlap = math.ceil(settings.overlap_s * spec.latent_rate)
    stride = window - overlap
    count = math.ceil((total - window) / stride) + 1
    span = total - window
    starts = tuple(round(k * span / (count - 1)) for k in range(count))
    return WindowPlan(duration=duration, mode=mode, total_latents=total, window_latents=window, starts=starts)


def on_grid_of(plan: WindowPlan, mode: str) -> WindowPlan:
    """``plan``'s windows moved to ``mode``'s latent grid: each starts at the frame nearest its time (within half
    a latent frame: 16 ms at 16 kHz, 12 ms at 44.1 kHz, less than one 25 fps video frame), the last one ending
    with the soundtrack. For conditions encoded without knowing the network's mode."""
    if plan.is_single or plan.mode == mode:
        return plan
    window = SequenceLengths.for_duration(TRAINING_DURATION_S, mode).latent_seq_len
    total = SequenceLengths.for_duration(plan.duration, mode).latent_seq_len
    rate = MODES[mode].latent_rate
    starts = tuple(min(total - window, max(0, round(plan.start_seconds(k) * rate))) for k in range(plan.num_windows))
    return WindowPlan(duration=plan.duration, mode=mode, total_latents=total, window_latents=window, starts=starts)


def blend_weights(plan: WindowPlan) -> torch.Tensor:
    """[windows, L] float32 weights: 1 where a window is alone, raised-cosine ramps over each overlap that sum
    to one with the neighbour's (so a region's blend is an average, and a window's own region is its own).
    Where three windows meet (a soundtrack just longer than a stride), ramps multiply; blends divide by the sum."""
    count, length = plan.num_windows, plan.window_latents
    weights = torch.ones(count, length, dtype=torch.float64)
    for k in range(count - 1):
        shared = plan.starts[k] + length - plan.starts[k + 1]
        if shared <= 0:
            continue
        phase = (torch.arange(shared, dtype=torch.float64) + 0.5) / shared * (math.pi / 2)
        weights[k, length - shared:] *= torch.cos(phase) ** 2
        weights[k + 1, :shared] *= torch.sin(phase) ** 2
    return weights.to(torch.float32)
