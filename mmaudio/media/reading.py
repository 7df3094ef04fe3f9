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


def iter_video_frames(
    source: MediaSource, *, max_duration: float | None = None, chunk_size: int = 16
) -> Iterator[FrameChunk]:
    """Decode the first video stream to RGB uint8 in chunks of ``chunk_size`` frames.

    ``max_duration`` keeps the frames whose time, measured from the first frame, is at most that many seconds
    (a frame exactly at the limit is kept, as the reference reader does). Frames whose size differs from the
    first frame's are rescaled to it, so every chunk stacks.
    """
    limit = _check_max_duration(max_duration)
    if chunk_size < 1:
        raise InvalidInputError(f"chunk_size must be at least 1, got {chunk_size}")
    with open_media(source) as container:
        stream = first_video_stream(container, source)
        stream.thread_type = "AUTO"
        time_base = Fraction(stream.time_base) if stream.time_base else None
        rate = stream_frame_rate(stream) or Fraction(1)
        size: tuple[int, int] | None = None
        first_time: Fraction | None = None
        buffer = times = stamps = None
        filled = decoded = 0
        try:
            for frame in container.decode(stream):
                if frame.pts is not None and time_base is not None:
                    pts, time = int(frame.pts), frame.pts * time_base
                else:  # an elementary stream without timestamps: count frames at the nominal rate
                    time = decoded / rate
                    pts = round(time / time_base) if time_base else decoded
                decoded += 1
                if first_time is None:
                    first_time = time
                if limit is not None and time - first_time > limit:
                    break
                if size is None:
                    size = (frame.height, frame.width)
                if buffer is None:
                    buffer = np.empty((chunk_size, *size, 3), dtype=np.uint8)
                    times, stamps = np.empty(chunk_size, np.float64), np.empty(chunk_size, np.int64)
                if (frame.height, frame.width) != size:
                    frame = frame.reformat(width=size[1], height=size[0])
                buffer[filled] = frame.to_ndarray(format="rgb24")
                times[filled], stamps[filled] = float(time), pts
                filled += 1
                if filled == chunk_size:
                    yield FrameChunk(torch.from_numpy(buffer), torch.from_numpy(times), torch.from_numpy(stamps))
                    buffer, filled = None, 0
        except av.FFmpegError as exc:
            raise InvalidInputError(f"video {describe(source)} is damaged: {exc}") from exc
        if buffer is not None and filled:
            yield FrameChunk(
                torch.from_numpy(buffer[:filled]), torch.from_numpy(times[:filled]), torch.from_numpy(stamps[:filled])
            )
        if decoded == 0:
            raise InvalidInputError(f"no frame of {describe(source)} could be decoded")


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
