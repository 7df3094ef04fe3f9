"""Frame choice and resizing while a video file is decoded, so no full-resolution copy of the clip ever exists.

Decoding a whole clip before choosing frames costs ~1.9 GB for 10 s of 1080p30 and rules out minutes of 4K. Here
each decoded chunk is looked at once: a :class:`~.frames.SlotClock` per target rate (8 fps CLIP, 25 fps
Synchformer) says at once whether a frame fills any slot, the frames that do are resized to their 384x384 and
224x224 uint8 forms straight into slot-ordered buffers, and the chunk is dropped. Peak memory is the resized
frames plus one decoded chunk (and one gathered copy of its chosen frames).

Why the result is exactly that of :func:`~.frames.prepare_frames` on the whole clip: with a requested duration
the clocks stop where the reference reader stops; without one they run to the end of the stream, which selects
every slot up to the clip's last frame, and the final plan (:func:`~.frames.plan_frames` over every timestamp) is a
prefix of those slots. So every slot of the final plan has its source frame resized, by the same functions.

A :class:`VideoFile` may be a trimmed stretch of its file (:class:`~..media.reading.TimeWindow`): the clip is then
that stretch's frames, timed from its first one, and the same holds with "clip" meaning the stretch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InvalidInputError
from ..media.reading import WHOLE_FILE, FrameChunk, TimeWindow, VideoInfo, iter_video_frames, probe_video
from ..media.sources import MediaSource
from .frames import (
    CLIP_FPS,
    CLIP_SIZE,
    SYNC_FPS,
    SYNC_SIZE,
    PreparedFrames,
    Progress,
    SlotClock,
    check_duration,
    check_frames,
    check_times,
    gather_quantized,
    plan_frames,
    resize_for_clip,
    resize_for_sync,
)

log = logging.getLogger(__name__)

# Seconds decoded past a requested duration: the plan looks up to the first frame after it, which must be read.
DECODE_MARGIN_S = 1.0
# Full-resolution uint8 frames held at once while decoding (one chunk): 2 frames of 1080p, 1 of 4K, 32 of 360p.
# Larger chunks do not decode or resize faster; they only raise the peak (the chunk plus one gathered copy).
DECODE_CHUNK_BYTES = 16 * 2**20

Chunk = FrameChunk | tuple[torch.Tensor, torch.Tensor | Sequence[float]]


def _unpack(chunk: Chunk) -> tuple[torch.Tensor, Any]:
    if hasattr(chunk, "frames") and hasattr(chunk, "timestamps"):
        return chunk.frames, chunk.timestamps
    if isinstance(chunk, tuple) and len(chunk) == 2:
        return chunk
    raise InvalidInputError(
        f"video chunks: expected (frames [n,H,W,C], timestamps [n]) pairs or FrameChunks, got {type(chunk).__name__}")


class _SlotBuffer:
    """Resized frames in slot order, written as a clock fills the slots (a frame repeats when the source is slower).

    The final plan keeps a prefix of these slots, so with a good size estimate the result is a view of one tensor,
    never a second copy. Without one, blocks are added and joined at the end.
    """

    def __init__(self, size: int, capacity: int) -> None:
        self.size = size
        self.sources: list[int] = []  # source frame of each slot written
        self._blocks = [self._new(max(1, capacity))]
        self._offset = 0
        self._grow = max(16, capacity // 4)

    def _new(self, slots: int) -> torch.Tensor:
        return torch.empty((slots, 3, self.size, self.size), dtype=torch.uint8)

    def put(self, resized: torch.Tensor, sources: list[int], counts: list[int]) -> None:
        for frame, src, count in zip(resized, sources, counts, strict=True):
            for _ in range(count):
                if self._offset == self._blocks[-1].shape[0]:
                    self._blocks.append(self._new(self._grow))
                    self._offset = 0
                self._blocks[-1][self._offset] = frame
                self._offset += 1
                self.sources.append(src)

    def first_frame(self) -> torch.Tensor:
        return self._blocks[0][0]

    def take(self, count: int) -> torch.Tensor:
        """The first ``count`` slots as one tensor; the buffer is emptied."""
        blocks, self._blocks = self._blocks, []
        if count == 0:
            return self._new(0)
        if count <= blocks[0].shape[0]:
            return blocks[0][:count]
        return torch.cat(blocks)[:count]


class FrameStreamer:
    """Takes decoded chunks in presentation order; keeps only the resized frames the slots need.

    ``add`` each chunk, then ``finish`` to get the :class:`PreparedFrames` of the whole stream. Nothing of a chunk
    is kept after ``add`` returns (only new, resized tensors), so the caller can drop it. ``expected_duration``
    (seconds the stream should cover, e.g. from the file's header) sizes the output buffers up front, so the
    resized frames are never copied a second time; it changes nothing in the result.
    """

    def __init__(self, duration: float | None = None, *, expected_duration: float | None = None) -> None:
        self.requested = check_duration(duration)
        end = self.requested if self.requested is not None else math.inf
        self._clip_clock = SlotClock(CLIP_FPS, end)
        self._sync_clock = SlotClock(SYNC_FPS, end)
        seconds = expected_duration if expected_duration is not None else self.requested
        if seconds is not None and self.requested is not None:
            seconds = min(seconds, self.requested)

        def capacity(rate: float) -> int:
            return 64 if seconds is None or not math.isfinite(seconds) else max(1, int(rate * seconds) + 2)

        self._clip = _SlotBuffer(CLIP_SIZE, capacity(CLIP_FPS))
        self._sync = _SlotBuffer(SYNC_SIZE, capacity(SYNC_FPS))
        self._first_clip: torch.Tensor | None = None  # frame 0 for a still image, when it fills no CLIP slot
        self._times: list[float] = []
        self._size: tuple[int, int] | None = None
        self._finished = False

    @property
    def num_frames(self) -> int:
        """Frames taken so far."""
        return len(self._times)

    @property
    def timestamps(self) -> torch.Tensor:
        """float64 [N]: the time of every frame taken so far."""
        return torch.tensor(self._times, dtype=torch.float64)

    @property
    def slots_filled(self) -> tuple[int, int]:
        """(CLIP, Synchformer) slots filled so far; the final plan keeps a prefix of each."""
        return len(self._clip.sources), len(self._sync.sources)

    def add(self, frames: torch.Tensor, timestamps: torch.Tensor | Sequence[float]) -> None:
        """One chunk: frames [n,H,W,C] (uint8, or float 0..1 like an IMAGE) and their times in seconds."""
        if self._finished:
            raise RuntimeError("FrameStreamer.add after finish")
        if isinstance(frames, torch.Tensor) and frames.ndim in (3, 4) and frames.shape[0] == 0:
            check_times(timestamps, 0)
            return
        n, h, w, _ = check_frames(frames)
        if self._size is None:
            self._size = (h, w)
        elif (h, w) != self._size:
            raise InvalidInputError(
                f"frames: a chunk of {h}x{w} frames follows {self._size[0]}x{self._size[1]} ones; all frames of a "
                "video must have one size")
        times = check_times(timestamps, n)
        if self._times and times[0] < self._times[-1]:
            raise InvalidInputError("timestamps must be in presentation order (non-decreasing)")

        first = len(self._times)
        clip_counts = [len(self._clip_clock.fill(t)) for t in times]
        sync_counts = [len(self._sync_clock.fill(t)) for t in times]
        self._times.extend(times)
        if first == 0 and clip_counts[0] == 0:  # a one-frame file is a still image, whose plan uses frame 0
            self._first_clip = resize_for_clip(_pick(frames, [0]))[0]
        for counts, resize, buffer in ((clip_counts, resize_for_clip, self._clip),
                                       (sync_counts, resize_for_sync, self._sync)):
            rows = [j for j, c in enumerate(counts) if c]
            if rows:  # one gathered copy at a time, freed after the resize: the peak stays near one chunk
                buffer.put(resize(_pick(frames, rows)), [first + j for j in rows], [counts[j] for j in rows])

    def finish(self) -> PreparedFrames:
        """Plan over every frame taken (as :func:`plan_frames` does) and keep the plan's slots."""
        if self._finished:
            raise RuntimeError("FrameStreamer.finish called twice")
        if not self._times:
            raise InvalidInputError("frames: the video gave zero frames; expected at least one")
        plan = plan_frames(len(self._times), times=self._times, duration=self.requested)
        self._finished = True
        if plan.is_still:
            first = self._first_clip if self._first_clip is not None else self._clip.first_frame()
            clip_u8 = first.expand(len(plan.clip_indices), -1, -1, -1).clone()
        else:
            clip_u8 = _keep(self._clip, plan.clip_indices, "CLIP")
        sync_u8 = _keep(self._sync, plan.sync_indices, "Synchformer")
        return PreparedFrames(plan=plan, clip_u8=clip_u8, sync_u8=sync_u8)

    def consume(
        self,
        chunks: Iterable[Chunk],
        *,
        expected_frames: int | None = None,
        progress: Progress | None = None,
    ) -> PreparedFrames:
        """``add`` every chunk, then ``finish``. ``progress(done, total)`` follows each chunk (total: the larger of
        ``expected_frames`` and the frames seen) and may raise to interrupt; the iterator is closed either way."""
        iterator = iter(chunks)
        try:
            for chunk in iterator:
                self.add(*_unpack(chunk))
                del chunk  # before the next one is decoded: one full-resolution chunk alive at a time
                if progress is not None:
                    progress(self.num_frames, max(self.num_frames, expected_frames or 0))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        prepared = self.finish()
        if progress is not None:
            progress(self.num_frames, self.num_frames)
        return prepared


def _pick(frames: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """[k,H,W,3] uint8 of the listed rows; the chunk itself when it is already that (a decoder's whole chunk)."""
    whole = rows == list(range(frames.shape[0]))
    if whole and frames.dtype == torch.uint8 and frames.ndim == 4 and frames.shape[-1] == 3:
        return frames
    return gather_quantized(frames, rows)


def _keep(buffer: _SlotBuffer, indices: Sequence[int], what: str) -> torch.Tensor:
    """The plan's slots: a prefix of the streamed ones (checked, since anything else would be a bug here)."""
    count = len(indices)
    if tuple(buffer.sources[:count]) != tuple(indices):
        raise RuntimeError(f"{what}: the streamed slots are not a prefix-superset of the plan's slots")
    return buffer.take(count)


def prepare_frames_streaming(
    chunks: Iterable[Chunk],
    *,
    duration: float | None = None,
    expected_frames: int | None = None,
    expected_duration: float | None = None,
    progress: Progress | None = None,
) -> PreparedFrames:
    """What :func:`~.frames.prepare_frames` gives for the whole clip, from its chunks as they are decoded.

    ``chunks``: (frames [n,H,W,C], timestamps [n]) pairs or :class:`~..media.reading.FrameChunk` objects, in
    presentation order. ``duration`` as in :func:`~.frames.plan_frames` (None: the clip's length). The expected
    counts only size the progress total and the output buffers (see :class:`FrameStreamer`).
    """
    streamer = FrameStreamer(duration, expected_duration=expected_duration)
    return streamer.consume(chunks, expected_frames=expected_frames, progress=progress)


# ----------------------------------------------------------------------------------------------- video files


def decode_chunk_size(height: int, width: int, budget_bytes: int = DECODE_CHUNK_BYTES) -> int:
    """How many uint8 RGB frames of this size fit in ``budget_bytes`` (1 to 32)."""
    return max(1, min(32, budget_bytes // max(1, height * width * 3)))


@dataclass
class VideoFile:
    """A video file to stream into the feature extractors: its probed facts and how much of it to read.

    ``duration`` is the requested duration (None: the clip's length); decoding stops ``DECODE_MARGIN_S`` after it
    (or after ``longest`` when none is given). ``window`` is the stretch of the file to read (a trim; see
    :class:`~..media.reading.TimeWindow`): the clip is then that stretch, timed from its first frame.
    """

    source: MediaSource
    info: VideoInfo
    duration: float | None
    max_duration: float | None
    chunk_size: int
    window: TimeWindow = WHOLE_FILE

    @classmethod
    def open(cls, source: MediaSource, *, duration: float | None = None, longest: float | None = None,
             chunk_size: int | None = None, start: float = 0.0, length: float | None = None) -> VideoFile:
        """Probe ``source`` (an unreadable file fails here, before any model is loaded).

        ``longest`` bounds a clip-length duration: a clip longer than that gets ``duration = longest``, and
        without a duration decoding stops ``DECODE_MARGIN_S`` after ``longest`` whatever the header says.
        ``start`` and ``length`` (seconds; None: to the end) trim the file, as ComfyUI trims a VIDEO.
        """
        return cls._with(source, probe_video(source), duration, longest, chunk_size, TimeWindow(start, length))

    def for_duration(self, duration: float | None, *, longest: float | None = None) -> VideoFile:
        """The same file and trim (not probed again) read for another requested duration."""
        return self._with(self.source, self.info, duration, longest, self.chunk_size, self.window)

    @classmethod
    def _with(cls, source: MediaSource, info: VideoInfo, duration: float | None, longest: float | None,
              chunk_size: int | None, window: TimeWindow) -> VideoFile:
        requested = check_duration(duration)
        bound = check_duration(longest)
        seconds = window.seconds_of(info)
        if requested is None and bound is not None and seconds > bound:
            log.warning("the video lasts %.1f s; using its first %.1f s", seconds, bound)
            requested = bound
        limit = requested if requested is not None else bound
        size = chunk_size if chunk_size is not None else decode_chunk_size(info.height, info.width)
        if size < 1:
            raise InvalidInputError(f"chunk_size must be at least 1, got {size}")
        return cls(source=source, info=info, duration=requested, window=window,
                   max_duration=None if limit is None else limit + DECODE_MARGIN_S, chunk_size=size)

    @property
    def expected_frames(self) -> int:
        """Frames the decoder should give (from the header; a progress total, not a promise)."""
        count = self.info.frame_count
        if not self.window.is_whole:
            count = min(count, math.floor(self.window.seconds_of(self.info) * self.info.fps) + 1)
        if self.max_duration is not None:
            count = min(count, math.floor(self.max_duration * self.info.fps) + 2)
        return max(1, count)

    @property
    def expected_duration(self) -> float:
        """Seconds the features should cover (the requested duration, cut to the clip's length)."""
        length = self.window.seconds_of(self.info)
        return length if self.duration is None else min(self.duration, length)

    def chunks(self) -> Iterator[FrameChunk]:
        """Decoded chunks of ``chunk_size`` frames of the window, up to ``max_duration``."""
        return iter_video_frames(self.source, max_duration=self.max_duration, chunk_size=self.chunk_size,
                                 window=self.window)

    def prepare(self, *, progress: Progress | None = None) -> tuple[PreparedFrames, torch.Tensor]:
        """Decode, choose and resize in one pass (see :class:`FrameStreamer`): the prepared frames, and the time
        of every frame read (float64 seconds)."""
        streamer = FrameStreamer(self.duration, expected_duration=self.expected_duration)
        prepared = streamer.consume(self.chunks(), expected_frames=self.expected_frames, progress=progress)
        return prepared, streamer.timestamps
