"""Which core VIDEO inputs are plain files that can be read (or stream-copied) directly.

Newer ComfyUI hands out views of a file (``VideoFromFile``): ``get_stream_source()`` is then always the whole,
unedited file, while the VIDEO shows only part of it. Two kinds of view exist:

- a trim, ``get_active_trim_window() -> (start, duration)`` in seconds (start >= 0; duration 0: to the end).
  ``get_components()`` keeps the frames with ``int(start / time_base) <= pts < int((start + duration) /
  time_base)`` and hands them over at the stream's average frame rate, i.e. timed from the first kept frame. That
  is a stretch of the file, so the encode node streams it (:func:`file_view_of`, read with
  :class:`~..mmaudio.media.reading.TimeWindow`, which keeps the same frames and times them the same way);
- frame edits (crop, resize): ``has_pending_frame_edits()`` is True and only ``get_components()`` gives the
  pixels the VIDEO shows.

The mux node stream-copies packets, which cannot apply a trim, so it takes only unedited, untrimmed files
(:func:`unedited_file_of`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FileView:
    """The file behind a VIDEO (path or BytesIO) and the stretch of it the VIDEO shows (seconds)."""

    source: Any
    start: float = 0.0
    length: float | None = None  # None: to the end of the file

    @property
    def is_whole(self) -> bool:
        return self.start == 0 and self.length is None


def _trim_of(video: Any) -> tuple[float, float | None] | None:
    """(start, length or None) of the VIDEO's trim; (0, None) untrimmed; None when the values make no sense
    (left to ``get_components()``, which has its own idea of them)."""
    trim_window = getattr(video, "get_active_trim_window", None)
    if trim_window is None:
        return 0.0, None
    start, duration = (float(v) for v in trim_window())
    if not (math.isfinite(start) and math.isfinite(duration) and start >= 0 and duration >= 0):
        return None
    return start, duration if duration > 0 else None


def _crops_lazily(video: Any) -> bool:
    """True for a VIDEO whose ``as_cropped`` is not ComfyUI's default (``VideoInput.as_cropped`` materialises the
    frames; an override may instead keep a crop of the file to apply later)."""
    defining = next((cls for cls in type(video).__mro__ if "as_cropped" in vars(cls)), None)
    return defining is not None and defining.__name__ != "VideoInput"


def file_view_of(video: Any) -> FileView | None:
    """The file behind a VIDEO and its trim, when reading that stretch of the file gives exactly the VIDEO's
    frames; None for a VIDEO with no file or with frame edits (those must go through ``get_components()``)."""
    stream_source = getattr(video, "get_stream_source", None)
    if stream_source is None:
        return None
    pending_edits = getattr(video, "has_pending_frame_edits", None)
    if pending_edits is None and _crops_lazily(video):
        return None  # it may hold a crop it cannot report: only get_components() is sure to apply it
    if pending_edits is not None and pending_edits():
        return None
    trim = _trim_of(video)
    if trim is None:
        return None
    return FileView(stream_source(), *trim)


def unedited_file_of(video: Any) -> Any:
    """The file (path or BytesIO) behind a VIDEO when that file holds exactly what the VIDEO shows, else None.

    Trimmed or edited views of a file (and VIDEOs with no file at all) must be taken through
    ``get_components()`` by a caller that copies the file's packets.
    """
    view = file_view_of(video)
    return view.source if view is not None and view.is_whole else None
