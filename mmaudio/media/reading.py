"""Reading video: exact stream facts (probe) and decoded RGB frames with their presentation times.

Times are kept as the stream reports them (``pts * time_base``), never reconstructed from an assumed frame
rate: frame picking for the feature extractors is by timestamp, and that is only right if the timestamps are
the file's own.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import torch

from ..errors import InvalidInputError
from .sources import MediaSource, describe, first_video_stream, open_media, stream_frame_rate


@dataclass(frozen=True)
class VideoInfo:
    """Facts about the first video stream of a file."""

    fps: Fraction  # exact rational frame rate
    frame_count: int
    duration: float  # seconds, from the first frame's start to the last frame's end
    width: int
    height: int
    has_audio: bool
    codec: str
    start_time: float  # seconds; presentation time of the first frame
    time_base: Fraction  # unit of the stream's timestamps


@dataclass(frozen=True)
class PacketTiming:
    """Span of a video stream measured over its packets (no decoding): what a stream copy will reproduce."""

    frame_count: int
    start: Fraction  # seconds
    end: Fraction  # seconds

    @property
    def duration(self) -> Fraction:
        return self.end - self.start


@dataclass(frozen=True)
class FrameChunk:
    """A run of consecutive decoded frames."""

    frames: torch.Tensor  # uint8 [n, H, W, 3]
    timestamps: torch.Tensor  # float64 [n], seconds (pts * time_base)
    pts: torch.Tensor  # int64 [n], in units of the stream's time_base


@dataclass(frozen=True)
class VideoFrames:
    """All decoded frames of a clip (or of its first ``max_duration`` seconds)."""

    frames: torch.Tensor  # uint8 [N, H, W, 3]
    timestamps: torch.Tensor  # float64 [N], seconds (pts * time_base)
    pts: torch.Tensor  # int64 [N]
    time_base: Fraction
    fps: Fraction


@dataclass(frozen=True)
class TimeWindow:
    """The stretch ``[start, start + length)`` of a file's timeline (seconds) that a trimmed video shows.

    Read the way ComfyUI's ``VideoFromFile.get_components()`` reads a trim: a frame belongs to the window when
    ``int(start / time_base) <= pts < int((start + length) / time_base)``, and the window's first frame is time 0
    (later frames keep their spacing: ``pts * time_base`` minus the first frame's), so frame choice and the length
    are those of the trimmed VIDEO's frames. ``length`` None: to the end of the file.
    """

    start: float = 0.0
    length: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.start, (int, float)) and math.isfinite(self.start) and self.start >= 0):
            raise InvalidInputError(f"window start must be a finite number of seconds >= 0, got {self.start!r}")
        if self.length is not None and not (
                isinstance(self.length, (int, float)) and math.isfinite(self.length) and self.length > 0):
            raise InvalidInputError(f"window length must be a positive number of seconds or None, got {self.length!r}")

    @property
    def is_whole(self) -> bool:
        """The whole file, read with its own timestamps (no trim)."""
        return self.start == 0 and self.length is None

    def pts_bounds(self, time_base: Fraction) -> tuple[int, int | None]:
        """First pts inside and first pts past the window, truncated exactly as ComfyUI truncates them."""
        end = None if self.length is None else int((self.start + self.length) / time_base)
        return int(self.start / time_base), end

    def seconds_of(self, info: VideoInfo) -> float:
        """How much of the file's timeline the window covers (its length, cut to the file)."""
        if self.is_whole:
            return info.duration
        end = info.start_time + info.duration
        if self.length is not None:
            end = min(end, self.start + self.length)
        return max(0.0, end - max(self.start, info.start_time))


WHOLE_FILE = TimeWindow()


def scan_packet_timing(container: av.container.InputContainer, stream: av.VideoStream, source: object) -> PacketTiming:
    """Count the stream's frames and measure its presentation span by walking its packets."""
    rate = stream_frame_rate(stream)
    time_base = Fraction(stream.time_base) if stream.time_base else None
    nominal = round(1 / (rate * time_base)) if rate and time_base else 0
    count, first, last, untimed = 0, None, None, False
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the demuxer's end-of-stream marker
                continue
            count += 1
            if getattr(packet, "is_discard", False):  # pre-roll that an edit list hides from display
                continue
            if packet.pts is None or time_base is None:
                untimed = True
                continue
            end = packet.pts + (packet.duration or nominal)
            first = packet.pts if first is None else min(first, packet.pts)
            last = end if last is None else max(last, end)
    except av.FFmpegError as exc:
        raise InvalidInputError(f"video {describe(source)} is damaged: {exc}") from exc
    if count == 0:
        raise InvalidInputError(f"the video stream of {describe(source)} holds no frames")
    if untimed or first is None or last is None or last <= first:
        if rate is None:
            raise InvalidInputError(f"cannot tell the timing of {describe(source)}: no timestamps and no frame rate")
        return PacketTiming(count, Fraction(0), Fraction(count) / rate)
    return PacketTiming(count, first * time_base, last * time_base)


def probe_video(source: MediaSource) -> VideoInfo:
    """Frame rate, frame count, duration, size and audio presence of the first video stream.

    Header values are used when the container stores them (mp4); otherwise (mkv, webm) the packets are scanned,
    which reads the file but decodes nothing.
    """
    with open_media(source) as container:
        stream = first_video_stream(container, source)
        time_base = Fraction(stream.time_base) if stream.time_base else None
        rate = stream_frame_rate(stream)
        if stream.frames and stream.frames > 0 and stream.duration and time_base:
            count = int(stream.frames)
            duration = Fraction(stream.duration) * time_base
            start = Fraction(stream.start_time or 0) * time_base
        else:
            timing = scan_packet_timing(container, stream, source)
            count, duration, start = timing.frame_count, timing.duration, timing.start
        if rate is None:
            if duration <= 0:
                raise InvalidInputError(f"cannot tell the frame rate of {describe(source)}")
            rate = (count / duration).limit_denominator(1001)
        return VideoInfo(
            fps=rate,
            frame_count=count,
            duration=float(duration),
            width=int(stream.width),
            height=int(stream.height),
            has_audio=len(container.streams.audio) > 0,
            codec=stream.codec_context.name,
            start_time=float(start),
            time_base=time_base or Fraction(1),
        )


def _check_max_duration(max_duration: float | None) -> float | None:
    if max_duration is None:
        return None
    value = float(max_duration)
    if not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"max_duration must be a positive number of seconds or None, got {max_duration!r}")
    return value


class _FrameClock:
    """Each decoded frame's pts and time in seconds (``pts * time_base``, exact); a stream without timestamps
    counts frames at its nominal rate instead."""

    def __init__(self, stream: av.VideoStream) -> None:
        self.time_base = Fraction(stream.time_base) if stream.time_base else None
        self.rate = stream_frame_rate(stream) or Fraction(1)
        self.decoded = 0

    def stamp(self, frame: av.VideoFrame) -> tuple[int, Fraction, bool]:
        """(pts, time, whether the frame carried its own timestamp)."""
        timed = frame.pts is not None and self.time_base is not None
        if timed:
            pts, time = int(frame.pts), frame.pts * self.time_base
        else:  # an elementary stream without timestamps: count frames at the nominal rate
            time = self.decoded / self.rate
            pts = round(time / self.time_base) if self.time_base else self.decoded
        self.decoded += 1
        return pts, time, timed


class _ChunkBuilder:
    """Decoded frames copied into ``chunk_size``-frame RGB arrays; a frame whose size differs from the first
    frame's is rescaled to it, so every chunk stacks."""

    def __init__(self, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self.size: tuple[int, int] | None = None
        self.buffer: np.ndarray | None = None
        self.times = self.stamps = np.empty(0)
        self.filled = 0

    def add(self, frame: av.VideoFrame, time: Fraction, pts: int) -> FrameChunk | None:
        """Copy one frame in; the chunk once it is full, else None."""
        if self.size is None:
            self.size = (frame.height, frame.width)
        if self.buffer is None:
            self.buffer = np.empty((self.chunk_size, *self.size, 3), dtype=np.uint8)
            self.times, self.stamps = np.empty(self.chunk_size, np.float64), np.empty(self.chunk_size, np.int64)
        if (frame.height, frame.width) != self.size:
            frame = frame.reformat(width=self.size[1], height=self.size[0])
        self.buffer[self.filled] = frame.to_ndarray(format="rgb24")
        self.times[self.filled], self.stamps[self.filled] = float(time), pts
        self.filled += 1
        return self.rest() if self.filled == self.chunk_size else None

    def rest(self) -> FrameChunk | None:
        """The frames not yet handed out (None when there are none); the next frame starts a new array."""
        if self.buffer is None or not self.filled:
            return None
        n, buffer = self.filled, self.buffer
        self.buffer, self.filled = None, 0
        return FrameChunk(torch.from_numpy(buffer[:n] if n < self.chunk_size else buffer),
                          torch.from_numpy(self.times[:n]), torch.from_numpy(self.stamps[:n]))


def _seek_window(container: av.container.InputContainer, stream: av.VideoStream, window: TimeWindow,
                 source: object) -> tuple[int, int | None] | None:
    """The window's pts bounds (None for the whole file), with the container sought near its start.

    The seek is ComfyUI's (to the key frame before the start, only when the start is not 0), so the frames
    decoded from it are those ``get_components()`` decodes.
    """
    if window.is_whole:
        return None
    if not stream.time_base:
        raise InvalidInputError(f"cannot trim {describe(source)}: its video stream has no time base")
    bounds = window.pts_bounds(Fraction(stream.time_base))
    if bounds[0] != 0:
        container.seek(bounds[0], stream=stream)
    return bounds


def iter_video_frames(
    source: MediaSource, *, max_duration: float | None = None, chunk_size: int = 16, window: TimeWindow = WHOLE_FILE
) -> Iterator[FrameChunk]:
    """Decode the first video stream to RGB uint8 in chunks of ``chunk_size`` frames.

    ``max_duration`` keeps the frames whose time, measured from the first frame, is at most that many seconds
    (a frame exactly at the limit is kept, as the reference reader does). Frames whose size differs from the
    first frame's are rescaled to it, so every chunk stacks. ``window`` (a trim) reads only its frames, with
    times measured from its first frame (see :class:`TimeWindow`); without one, times are the file's own.
    """
    limit = _check_max_duration(max_duration)
    if chunk_size < 1:
        raise InvalidInputError(f"chunk_size must be at least 1, got {chunk_size}")
    with open_media(source) as container:
        stream = first_video_stream(container, source)
        stream.thread_type = "AUTO"
        clock, builder = _FrameClock(stream), _ChunkBuilder(chunk_size)
        first_time: Fraction | None = None
        origin: Fraction | int = 0
        try:
            bounds = _seek_window(container, stream, window, source)
            for frame in container.decode(stream):
                pts, time, timed = clock.stamp(frame)
                if bounds is not None:
                    if not timed:
                        raise InvalidInputError(f"cannot trim {describe(source)}: its frames carry no timestamps")
                    if pts < bounds[0]:
                        continue
                    if bounds[1] is not None and pts >= bounds[1]:
                        break
                if first_time is None:
                    first_time = time
                    origin = time if bounds is not None else 0
                if limit is not None and time - first_time > limit:
                    break
                chunk = builder.add(frame, time - origin, pts)
                if chunk is not None:
                    yield chunk
        except av.FFmpegError as exc:
            raise InvalidInputError(f"video {describe(source)} is damaged: {exc}") from exc
        rest = builder.rest()
        if rest is not None:
            yield rest
        if clock.decoded == 0:
            raise InvalidInputError(f"no frame of {describe(source)} could be decoded")
        if first_time is None:
            raise InvalidInputError(f"no frame of {describe(source)} lies in the trim window starting at "
                                    f"{window.start:g} s")


def read_video_frames(source: MediaSource, *, max_duration: float | None = None) -> VideoFrames:
    """Decode the whole clip (or its first ``max_duration`` seconds) into one uint8 tensor [N, H, W, 3].

    The output is allocated once from the probed frame count and filled chunk by chunk, so peak memory is the
    clip itself plus one chunk, not two copies.
    """
    limit = _check_max_duration(max_duration)
    info = probe_video(source)
    expected = info.frame_count
    if limit is not None:
        expected = min(expected, math.floor(limit * info.fps) + 2)
    frames: torch.Tensor | None = None
    times: list[torch.Tensor] = []
    stamps: list[torch.Tensor] = []
    count = 0
    for chunk in iter_video_frames(source, max_duration=limit, chunk_size=32):
        n = chunk.frames.shape[0]
        if frames is None:
            frames = torch.empty((max(expected, n), *chunk.frames.shape[1:]), dtype=torch.uint8)
        if count + n > frames.shape[0]:  # the header undercounted: grow once by a margin
            grown = torch.empty((max(count + n, frames.shape[0] * 5 // 4), *frames.shape[1:]), dtype=torch.uint8)
            grown[:count] = frames[:count]
            frames = grown
        frames[count : count + n] = chunk.frames
        times.append(chunk.timestamps)
        stamps.append(chunk.pts)
        count += n
    assert frames is not None  # iter_video_frames raises when nothing decodes
    return VideoFrames(
        frames=frames[:count],
        timestamps=torch.cat(times),
        pts=torch.cat(stamps),
        time_base=info.time_base,
        fps=info.fps,
    )


def read_audio(source: MediaSource, *, max_duration: float | None = None) -> tuple[torch.Tensor, int]:
    """The first audio stream of a file (an audio file, or a video's soundtrack) as float32 [channels, samples]
    at its own sample rate, decoded whole (or its first ``max_duration`` seconds)."""
    limit = _check_max_duration(max_duration)
    with open_media(source, "audio") as container:
        if not container.streams.audio:
            raise InvalidInputError(f"{describe(source)} has no audio stream")
        stream = container.streams.audio[0]
        rate = int(stream.rate or stream.codec_context.sample_rate or 0)
        if rate <= 0:
            raise InvalidInputError(f"the audio of {describe(source)} has no sample rate")
        pieces: list[np.ndarray] = []
        kept = 0
        try:
            for frame in container.decode(stream):
                data = frame.to_ndarray()
                if not frame.format.is_planar:  # interleaved [1, samples * channels]
                    data = data.reshape(-1, len(frame.layout.channels)).T
                pieces.append(data.astype(np.float32, copy=False) if data.dtype.kind == "f"
                              else _int_to_float(data))
                kept += data.shape[1]
                if limit is not None and kept >= limit * rate:
                    break
        except av.FFmpegError as exc:
            raise InvalidInputError(f"cannot decode the audio of {describe(source)}: {exc}") from exc
    if not pieces:
        raise InvalidInputError(f"the audio stream of {describe(source)} holds no samples")
    samples = np.concatenate(pieces, axis=1)
    if limit is not None:
        samples = samples[:, : math.ceil(limit * rate)]
    return torch.from_numpy(np.ascontiguousarray(samples)), rate


def _int_to_float(data: np.ndarray) -> np.ndarray:
    """Integer PCM to float32 in [-1, 1)."""
    scale = float(np.iinfo(data.dtype).max) + 1.0
    return (data.astype(np.float32) / scale).astype(np.float32)
