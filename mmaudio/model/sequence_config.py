"""Sequence lengths of the latent, CLIP and Synchformer streams for a given duration.

The network works on fixed-length token sequences that all derive from the clip duration: latents at the
autoencoder's rate, CLIP features at 8 fps, Synchformer features as 8 tokens per 16-frame segment (stride 8)
at 25 fps. The formulas keep the reference's floating-point arithmetic (no rounding of 25 * duration first),
so every duration gives exactly the lengths the published networks expect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InvalidInputError
from ..modes import MODES, AudioMode

CLIP_FPS = 8
SYNC_FPS = 25
SYNC_FRAMES_PER_SEGMENT = 16
SYNC_STEP = 8
SYNC_DOWNSAMPLE = 2  # 16 frames -> 8 tokens per segment
LATENT_DOWNSAMPLE = 2  # one latent per two spectrogram frames

# One Synchformer segment (16 frames at 25 fps) is the shortest input the network can be conditioned on.
MIN_DURATION_S = SYNC_FRAMES_PER_SEGMENT / SYNC_FPS



def validate_duration(duration_s: object) -> float:
    """``duration_s`` as a float, or :class:`InvalidInputError` when it cannot drive the sequence lengths."""
    if isinstance(duration_s, bool) or not isinstance(duration_s, (int, float)):
        raise InvalidInputError(f"duration must be a number of seconds, got {duration_s!r}")
    duration = float(duration_s)
    if not math.isfinite(duration) or duration <= 0:
        raise InvalidInputError(f"duration must be a positive, finite number of seconds, got {duration_s!r}")
    if duration * SYNC_FPS < SYNC_FRAMES_PER_SEGMENT:
        raise InvalidInputError(
            f"duration {duration:g} s is too short: at least {MIN_DURATION_S:g} s is needed "
            f"(one Synchformer segment of {SYNC_FRAMES_PER_SEGMENT} frames at {SYNC_FPS} fps)"
        )
    return duration


def _mode_spec(mode: str) -> AudioMode:
    try:
        return MODES[mode]
    except (KeyError, TypeError):
        raise InvalidInputError(f"mode must be one of {sorted(MODES)}, got {mode!r}") from None


@dataclass(frozen=True)
class SequenceLengths:
    """Token counts of every stream, and the audio the decoder will produce, for one duration and mode."""

    duration: float
    mode: str
    latent_seq_len: int
    clip_seq_len: int
    sync_seq_len: int
    num_audio_samples: int
    sample_rate: int

    @classmethod
    def for_duration(cls, duration_s: float, mode: str) -> SequenceLengths:
        """Lengths for ``duration_s`` seconds in ``mode`` ("16k" or "44k"); validates before computing."""
        spec = _mode_spec(mode)
        duration = validate_duration(duration_s)
        latent = math.ceil(duration * spec.sample_rate / spec.hop_length / LATENT_DOWNSAMPLE)
        clip = int(duration * CLIP_FPS)
        segments = (duration * SYNC_FPS - SYNC_FRAMES_PER_SEGMENT) // SYNC_STEP + 1
        sync = int(segments * SYNC_FRAMES_PER_SEGMENT / SYNC_DOWNSAMPLE)
        samples = latent * spec.hop_length * LATENT_DOWNSAMPLE
        return cls(duration=duration, mode=mode, latent_seq_len=int(latent), clip_seq_len=clip,
                   sync_seq_len=sync, num_audio_samples=samples, sample_rate=spec.sample_rate)

    @property
    def num_sync_frames(self) -> int:
        """Synchformer frames (25 fps) the reference reads: int(25 * duration)."""
        return int(self.duration * SYNC_FPS)

    @property
    def num_sync_segments(self) -> int:
        return self.sync_seq_len // (SYNC_FRAMES_PER_SEGMENT // SYNC_DOWNSAMPLE)

    @property
    def audio_seconds(self) -> float:
        """Length of the decoded audio; slightly longer than ``duration`` (trim it to the duration)."""
        return self.num_audio_samples / self.sample_rate
