"""Media I/O with PyAV: probe and decode video, write audio files, mux audio into video.

Pure PyAV + torch (no ComfyUI). Every bad input raises :class:`~..errors.InvalidInputError`, and every writer
produces its files atomically (temporary name beside the target, renamed on success, removed on failure).
"""

from .audio import AUDIO_ENCODERS, AUDIO_FILE_FORMATS, write_audio
from .muxing import (
    CONTAINERS,
    ProgressCallback,
    container_for_source,
    encode_frames,
    mux_audio_into_video,
    resolve_output_paths,
)
from .reading import (
    WHOLE_FILE,
    FrameChunk,
    TimeWindow,
    VideoFrames,
    VideoInfo,
    iter_video_frames,
    probe_video,
    read_video_frames,
)
from .sources import MediaSource, as_frame_rate

__all__ = [
    "AUDIO_ENCODERS",
    "AUDIO_FILE_FORMATS",
    "CONTAINERS",
    "WHOLE_FILE",
    "FrameChunk",
    "MediaSource",
    "ProgressCallback",
    "TimeWindow",
    "VideoFrames",
    "VideoInfo",
    "as_frame_rate",
    "container_for_source",
    "encode_frames",
    "iter_video_frames",
    "mux_audio_into_video",
    "probe_video",
    "read_video_frames",
    "resolve_output_paths",
    "write_audio",
]
