"""Opening media for reading, and the checks every reader shares.

A source is a path or a seekable binary file object (ComfyUI's VIDEO may hold an in-memory ``BytesIO``). Every
failure to open or find a video stream becomes an :class:`InvalidInputError` that names the source, so the node
layer can show it to the user instead of a PyAV traceback.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import Any, BinaryIO, Union

import av
from av.container import InputContainer

from ..errors import InvalidInputError

MediaSource = Union[str, "os.PathLike[str]", BinaryIO]

# Float frame rates are snapped to the nearest fraction with a denominator of at most this, which recovers
# NTSC rates (30000/1001 given as 29.97002997...) exactly and stays within 1e-6 fps of anything else.
_FPS_MAX_DENOMINATOR = 1001


def is_file_like(source: Any) -> bool:
    return hasattr(source, "read") and hasattr(source, "seek")


def describe(source: Any) -> str:
    """How a source is named in error messages."""
    if isinstance(source, (str, os.PathLike)):
        return f"'{os.fspath(source)}'"
    return f"<in-memory {type(source).__name__}>"


@contextmanager
def open_media(source: MediaSource, what: str = "video") -> Iterator[InputContainer]:
    """Open ``source`` for reading (rewinding file objects first); unreadable input is an InvalidInputError."""
    if is_file_like(source):
        source.seek(0)
        target: Any = source
    elif isinstance(source, (str, os.PathLike)):
        target = os.fspath(source)
    else:
        raise InvalidInputError(f"{what} must be a file path or a binary file object, got {type(source).__name__}")
    try:
        container = av.open(target, mode="r")
    except (av.FFmpegError, OSError) as exc:
        raise InvalidInputError(f"cannot read {what} {describe(source)}: {exc}") from exc
    try:
        yield container
    finally:
        container.close()


def first_video_stream(container: InputContainer, source: Any) -> av.VideoStream:
    if not container.streams.video:
        raise InvalidInputError(f"{describe(source)} has no video stream")
    return container.streams.video[0]


def stream_frame_rate(stream: av.VideoStream) -> Fraction | None:
    """The stream's frame rate as an exact fraction: the average rate, else FFmpeg's guess, else the base rate."""
    for name in ("average_rate", "guessed_rate", "base_rate"):
        rate = getattr(stream, name, None)
        if rate is not None and rate > 0:
            return Fraction(rate)
    return None


def as_frame_rate(fps: Any, what: str = "fps") -> Fraction:
    """A positive, finite frame rate as a Fraction; floats are snapped to a small denominator (see above)."""
    if isinstance(fps, (bool, str, bytes)) or fps is None:
        raise InvalidInputError(f"{what} must be a positive number, got {fps!r}")
    if isinstance(fps, numbers.Rational):
        rate = Fraction(fps)
    else:
        try:
            value = float(fps)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"{what} must be a positive number, got {fps!r}") from exc
        if not math.isfinite(value):
            raise InvalidInputError(f"{what} must be a finite positive number, got {value}")
        rate = Fraction(value).limit_denominator(_FPS_MAX_DENOMINATOR)
    if rate <= 0:
        raise InvalidInputError(f"{what} must be greater than 0, got {fps!r}")
    return rate
