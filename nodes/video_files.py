"""Which core VIDEO inputs are plain files that can be read (or stream-copied) directly."""

from __future__ import annotations

from typing import Any


def unedited_file_of(video: Any) -> Any:
    """The file (path or BytesIO) behind a VIDEO when that file holds exactly what the VIDEO shows, else None.

    Newer ComfyUI can hand out trimmed or edited views of a file; their file still holds the unedited stream, so
    those (and VIDEOs with no file at all) must be taken through ``get_components()`` instead.
    """
    stream_source = getattr(video, "get_stream_source", None)
    if stream_source is None:
        return None
    trim_window = getattr(video, "get_active_trim_window", None)
    if trim_window is not None and any(float(v) != 0.0 for v in trim_window()):
        return None
    pending_edits = getattr(video, "has_pending_frame_edits", None)
    if pending_edits is not None and pending_edits():
        return None
    return stream_source()
