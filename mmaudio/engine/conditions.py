"""The encode stage: a clip (or none) and the prompt fields -> the features every window is conditioned on.

Duration rules, in one place: without a clip the soundtrack lasts the requested duration, or the training length;
with a clip, the requested duration cut to what the clip covers, or the clip's length; at most
:data:`MAX_DURATION_S`. Up to the window threshold (and with no prompt change over time) the features are those of
one pass over the whole duration, exactly as the reference computes them; beyond it, every window gets the
features of its own span (``features/windows.py``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch

from ..errors import InvalidInputError
from ..features import frames as frame_selection
from ..features.clip import ClipEncoder
from ..features.extractor import FeatureExtractor
from ..features.frames import PreparedFrames
from ..features.streaming import VideoFile
from ..features.synchformer import SynchformerVisual, num_segments
from ..features.windows import image_chunks, prepare_windows
from ..model.config import TRAINING_DURATION_S
from ..model.sequence_config import SequenceLengths
from .prompts import PromptPlan, distinct_texts
from .runtime import Placed, Runtime
from .windows import WindowPlan, WindowSettings, plan_windows

log = logging.getLogger(__name__)

MAX_DURATION_S = 3600.0  # the longest soundtrack (and the longest clip read when no duration is given)
CLIP_BATCH = 16  # CLIP frames per forward
SYNC_BATCH = 8  # Synchformer segments per forward
DEFAULT_WINDOW_MODE = "44k"  # the latent grid of windows made without knowing the network (4 of 5 variants)


@dataclass(frozen=True)
class FeatureModels:
    """CLIP (image and text features) and the Synchformer visual encoder, each where it computes."""

    clip: Placed[ClipEncoder]
    synchformer: Placed[SynchformerVisual]

    def extractor(self) -> FeatureExtractor:
        return FeatureExtractor(self.clip.module, self.synchformer.module, device=self.synchformer.device)


@dataclass(frozen=True)
class VisualSource:
    """Frames to condition on: an IMAGE batch with its frame rate (or per-frame times), or a video file read
    with its own timestamps. ``kind`` is "video" or "image" (a single frame: image-to-audio)."""

    kind: str
    frames: torch.Tensor | None = None
    fps: Fraction | float | None = None
    times: torch.Tensor | None = None
    file: VideoFile | None = None

    @classmethod
    def from_images(cls, images: Any, fps: Any = None, times: Any = None) -> VisualSource:
        """An IMAGE batch [frames, H, W, C]; more than one frame needs ``fps`` or ``times``."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise InvalidInputError(f"images: expected an IMAGE batch [frames, height, width, channels], got "
                                    f"{getattr(images, 'shape', type(images).__name__)}")
        if images.shape[0] == 0:
            raise InvalidInputError("images: the batch has zero frames")
        if images.shape[0] == 1:  # a still image: image-to-audio, the frame rate plays no part
            return cls("image", frames=images, fps=1)
        if times is None and (fps is None or not float(fps) > 0):
            raise InvalidInputError(
                "fps: the frame rate of images is required (connect the fps output of Get Video Components, or "
                "VideoHelperSuite's loaded_fps); it decides which frames CLIP and Synchformer see"
            )
        return cls("video", frames=images, fps=fps, times=times)

    @classmethod
    def from_file(cls, file: VideoFile) -> VisualSource:
        return cls("video", file=file)


@dataclass(frozen=True)
class ClipSummary:
    """What the clip turned out to be, for displays: frames read, their rate, their times (files only)."""

    num_frames: int
    fps: float | None
    frame_times: torch.Tensor | None


@dataclass(frozen=True, eq=False)
class EncodedConditions:
    """Features for one soundtrack (CPU, float32), per window, with the text of every row in every window.

    ``clip_features`` [W, clip_len, 1024] and ``sync_features`` [W, sync_len, 768] are None where the network's
    learned empty features stand in (text-to-audio, mask_away_clip; no Synchformer for a still image).
    ``text_features`` [T, 77, 1024] holds the texts; ``text_index`` [rows, W] says which one each row uses in
    each window. ``negative_features`` likewise, with index -1 for the model's unconditional prompt.
    """

    windows: WindowPlan
    clip_features: torch.Tensor | None
    sync_features: torch.Tensor | None
    text_features: torch.Tensor
    text_index: torch.Tensor
    negative_features: torch.Tensor | None
    negative_index: torch.Tensor
    prompts: PromptPlan
    source: str  # "video", "image" or "text"
    requested_duration: float | None = None
    clip: ClipSummary | None = None

    @property
    def duration(self) -> float:
        return self.windows.duration

    @property
    def num_rows(self) -> int:
        return int(self.text_index.shape[0])

    @property
    def lengths(self) -> SequenceLengths:
        """Sequence lengths of one window's conditions (clip and sync do not depend on the mode)."""
        return SequenceLengths.for_duration(self.windows.window_duration, "44k")

    @property
    def clip_seq_len(self) -> int:
        return self.lengths.clip_seq_len

    @property
    def sync_seq_len(self) -> int:
        return self.lengths.sync_seq_len


def requested_seconds(duration: float | None) -> float | None:
    """A duration input as seconds, None (or 0) meaning "the clip's length"; refused beyond the longest."""
    if duration is None or duration == 0:
        return None
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration):
        raise InvalidInputError(f"duration: expected a number of seconds, got {duration!r}")
    if duration < 0:
        raise InvalidInputError(f"duration: expected 0 (the clip's length) or a positive number of seconds, "
                                f"got {duration:g}")
    if duration > MAX_DURATION_S:
        raise InvalidInputError(f"duration: {duration:g} s is longer than the longest soundtrack, "
                                f"{MAX_DURATION_S:g} s")
    return float(duration)


def encode_conditions(features: FeatureModels, source: VisualSource | None, prompts: PromptPlan, *,
                      duration: float | None, mask_away_clip: bool, runtime: Runtime, mode: str | None = None,
                      windows: WindowSettings | None = None) -> EncodedConditions:
    """Features of ``source`` and ``prompts`` for a soundtrack of ``duration`` seconds (None: the clip's length).

    ``mode`` puts long soundtracks' windows on that mode's latent grid (default: 44.1 kHz). Every input check
    runs before a model is loaded; each model is brought to its device by ``runtime`` right before its stage.
    """
    requested = requested_seconds(duration)
    windows = windows or WindowSettings()
    extractor = features.extractor()
    if source is None:
        seconds = SequenceLengths.for_duration(requested or TRAINING_DURATION_S, "44k").duration
        plan = _window_plan(seconds, prompts, mode, windows)
        runtime.plan({"text": 1})
        clip_f = sync_f = summary = None
        kind = "text"
    elif source.file is not None:
        file = source.file.for_duration(requested, longest=MAX_DURATION_S)
        plan = _window_plan(file.expected_duration, prompts, mode, windows)
        if plan.is_single:
            clip_f, sync_f, plan, summary = _encode_single_file(features, extractor, file, plan, mask_away_clip,
                                                                runtime)
        else:
            chunks = file.chunks()
            clip_f, sync_f, summary = _encode_windows(features, extractor, chunks, plan, mask_away_clip, runtime,
                                                      expected_frames=file.expected_frames)
        kind = "video"
    else:
        clip_f, sync_f, plan, summary, kind = _encode_images(features, extractor, source, requested, prompts, mode,
                                                             windows, mask_away_clip, runtime)
    prompts.check_fits(plan.duration)
    texts, text_index, negatives, negative_index = _encode_texts(features, extractor, prompts, plan, runtime)
    return EncodedConditions(
        windows=plan, clip_features=clip_f, sync_features=sync_f, text_features=texts, text_index=text_index,
        negative_features=negatives, negative_index=negative_index, prompts=prompts, source=kind,
        requested_duration=requested, clip=summary,
    )


def _window_plan(seconds: float, prompts: PromptPlan, mode: str | None, settings: WindowSettings) -> WindowPlan:
    """The windows of a soundtrack of ``seconds``; its timed prompts are checked against it before any work."""
    prompts.check_fits(seconds)
    # A prompt that changes over time needs windows to follow it, even on a clip the model takes in one pass.
    return plan_windows(seconds, mode or DEFAULT_WINDOW_MODE, settings, force=prompts.is_timed)


# ---- one pass ------------------------------------------------------------------------------------------------
def _encode_prepared(features: FeatureModels, extractor: FeatureExtractor, prepared: PreparedFrames,
                     mask_away_clip: bool, runtime: Runtime) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """CLIP and Synchformer features [1, len, D] of frames already chosen and resized."""
    plan = prepared.plan
    clip_f = sync_f = None
    if not mask_away_clip:
        with runtime.stage("clip", [features.clip], features.clip.module.memory_for_images(CLIP_BATCH)):
            clip_f = extractor.encode_clip_frames(prepared, batch=CLIP_BATCH,
                                                  progress=lambda d, t: runtime.progress("clip", d, t)).float()
    if not plan.is_still:
        memory = features.synchformer.module.memory_for_segments(SYNC_BATCH, features.synchformer.dtype)
        with runtime.stage("sync", [features.synchformer], memory):
            sync_f = extractor.encode_sync_frames(prepared, batch=SYNC_BATCH,
                                                  progress=lambda d, t: runtime.progress("sync", d, t)).float()
    return clip_f, sync_f


def _single_units(plan: frame_selection.FramePlan, mask_away_clip: bool) -> dict[str, int]:
    return {"clip": 0 if mask_away_clip else len(set(plan.clip_indices)),
            "sync": 0 if plan.is_still else num_segments(len(plan.sync_indices)), "text": 1}


def _encode_single_file(features: FeatureModels, extractor: FeatureExtractor, file: VideoFile, plan: WindowPlan,
                        mask_away_clip: bool, runtime: Runtime):
    seconds = file.expected_duration
    runtime.plan({"frames": file.expected_frames,
                  "clip": 0 if mask_away_clip else max(1, int(frame_selection.CLIP_FPS * seconds)),
                  "sync": max(1, num_segments(int(frame_selection.SYNC_FPS * seconds))), "text": 1})
    prepared, times = file.prepare(progress=lambda d, t: runtime.progress("frames", d, t))
    _warn_if_cut_short(file, prepared.plan.duration, int(times.numel()))
    clip_f, sync_f = _encode_prepared(features, extractor, prepared, mask_away_clip, runtime)
    summary = ClipSummary(num_frames=int(times.numel()), fps=None, frame_times=times)
    return clip_f, sync_f, _single(prepared.plan.duration), summary


def _warn_if_cut_short(file: VideoFile, covered: float, frames: int) -> None:
    """A file that decodes to much less than its header promises is damaged or truncated: say so."""
    expected = file.expected_duration
    if covered < 0.9 * expected - 0.5:
        log.warning("the video decodes to %d frames covering %.2f s, but its header promises %.2f s: the file may "
                    "be truncated or damaged; the soundtrack lasts %.2f s", frames, covered, expected, covered)


def _single(seconds: float) -> WindowPlan:
    return WindowPlan(duration=seconds, mode=None, total_latents=0, window_latents=0, starts=(0,))


def _encode_images(features: FeatureModels, extractor: FeatureExtractor, source: VisualSource,
                   requested: float | None, prompts: PromptPlan, mode: str | None, settings: WindowSettings,
                   mask_away_clip: bool, runtime: Runtime):
    count = frame_selection.frame_count(source.frames)
    frame_plan = frame_selection.plan_frames(count, source.fps, times=source.times, duration=requested)
    if frame_plan.duration > MAX_DURATION_S:
        frame_plan = frame_selection.plan_frames(count, source.fps, times=source.times, duration=MAX_DURATION_S)
    fps = None if frame_plan.is_still else float(source.fps) if source.fps is not None else None
    summary = ClipSummary(num_frames=count, fps=fps, frame_times=None if source.times is None else
                          torch.as_tensor(source.times, dtype=torch.float64))
    kind = "image" if frame_plan.is_still else source.kind
    plan = _window_plan(frame_plan.duration, prompts, mode, settings)
    if plan.is_single:
        runtime.plan({"frames": len(frame_plan.source_indices), **_single_units(frame_plan, mask_away_clip)})
        prepared = frame_selection.prepare_frames(source.frames, frame_plan,
                                                  progress=lambda d, t: runtime.progress("frames", d, t))
        clip_f, sync_f = _encode_prepared(features, extractor, prepared, mask_away_clip, runtime)
        return clip_f, sync_f, plan, summary, kind
    if frame_plan.is_still:  # image-to-audio: the one frame's features in every window
        runtime.plan({"frames": 1, "clip": 1, "text": 1})
        still = frame_selection.prepare_frames(source.frames, frame_selection.plan_frames(1, duration=1.0))
        clip_f = None
        if not mask_away_clip:
            with runtime.stage("clip", [features.clip], features.clip.module.memory_for_images(1)):
                row = extractor.encode_clip_frames(still, batch=1).float()[:, :1]
            clip_f = row.expand(plan.num_windows, int(frame_selection.CLIP_FPS * plan.window_duration), -1).clone()
        return clip_f, None, plan, summary, kind
    times = source.times if source.times is not None else frame_selection.frame_times(count, source.fps)
    chunk = frame_selection.auto_chunk_size(*frame_selection.check_frames(source.frames)[1:])
    clip_f, sync_f, _ = _encode_windows(features, extractor, image_chunks(source.frames, times, chunk), plan,
                                        mask_away_clip, runtime, expected_frames=count)
    return clip_f, sync_f, plan, summary, kind


# ---- windows -------------------------------------------------------------------------------------------------
def _encode_windows(features: FeatureModels, extractor: FeatureExtractor, chunks: Any, plan: WindowPlan,
                    mask_away_clip: bool, runtime: Runtime, *, expected_frames: int):
    """Per-window features [W, len, D], reading the frames once: each window is encoded as soon as its span has
    been read, so only the windows around the current time hold frames."""
    count = plan.num_windows
    runtime.plan({"frames": expected_frames, "windows": count, "text": 1})
    starts = [plan.start_seconds(k) for k in range(count)]
    clip_rows: list[torch.Tensor | None] = [None] * count
    sync_rows: list[torch.Tensor | None] = [None] * count
    models = [features.synchformer] if mask_away_clip else [features.clip, features.synchformer]
    memory = features.synchformer.module.memory_for_segments(SYNC_BATCH, features.synchformer.dtype)
    if not mask_away_clip:
        memory = max(memory, features.clip.module.memory_for_images(CLIP_BATCH))
    times_read: list[torch.Tensor] = []

    def frames_progress(done: int, total: int) -> None:
        runtime.progress("frames", done, total)

    done = 0
    with runtime.stage("windows", models, memory):
        for index, prepared in prepare_windows(_recording(chunks, times_read), starts, plan.window_duration,
                                               expected_frames=expected_frames, progress=frames_progress):
            if not mask_away_clip:
                clip_rows[index] = extractor.encode_clip_frames(prepared, batch=CLIP_BATCH).float()
            sync_rows[index] = extractor.encode_sync_frames(prepared, batch=SYNC_BATCH).float()
            done += 1
            runtime.progress("windows", done, count)
    clip_f = None if mask_away_clip else torch.cat(clip_rows)
    times = torch.cat(times_read) if times_read else torch.zeros(0, dtype=torch.float64)
    summary = ClipSummary(num_frames=int(times.numel()), fps=None, frame_times=times)
    return clip_f, torch.cat(sync_rows), summary


def _recording(chunks: Any, times_read: list[torch.Tensor]):
    """The chunks, passed on unchanged, with every frame time noted (for the clip's summary)."""
    for chunk in chunks:
        times = chunk.timestamps if hasattr(chunk, "timestamps") else chunk[1]
        times_read.append(torch.as_tensor(times, dtype=torch.float64).reshape(-1))
        yield chunk


# ---- text ----------------------------------------------------------------------------------------------------
def _encode_texts(features: FeatureModels, extractor: FeatureExtractor, prompts: PromptPlan, plan: WindowPlan,
                  runtime: Runtime):
    """Text features and, per row and window, which text (and which negative) applies there."""
    midpoints = [plan.midpoint_seconds(k) for k in range(plan.num_windows)]
    if prompts.is_timed:
        texts = distinct_texts(prompts.prompts)
        position = {text: i for i, text in enumerate(texts)}
        text_index = [[position[track.text_at(t)] for t in midpoints] for track in prompts.prompts]
    else:  # one text per row, in row order (the batch the reference would encode)
        texts = [track.segments[0].text for track in prompts.prompts]
        text_index = [[row] * len(midpoints) for row in range(len(texts))]
    # An empty negative (before a timed negative's first line) is the model's own unconditional prompt: -1.
    negatives = [text for text in distinct_texts(prompts.negatives) if text]
    spot = {text: i for i, text in enumerate(negatives)}
    negative_index = [[-1 if track is None else spot.get(track.text_at(t), -1) for t in midpoints]
                      for track in prompts.negatives]
    with runtime.stage("text", [features.clip], features.clip.module.memory_for_text(len(texts) + len(negatives))):
        text_f = extractor.encode_text(texts).float()
        negative_f = extractor.encode_text(negatives).float() if negatives else None
    runtime.progress("text", 1, 1)
    return (text_f, torch.tensor(text_index, dtype=torch.long), negative_f,
            torch.tensor(negative_index, dtype=torch.long))
