"""Media I/O with PyAV: probe and decode video, write audio files, mux audio into video.

Pure PyAV + torch (no ComfyUI). Every bad input raises :class:`~..errors.InvalidInputError`, and every writer
produces its files atomically (temporary name beside the target, renamed on success, removed on failure), with
the permissions of a new file. ``outputs`` checks output paths before a run, so nothing fails late.
"""

from .audio import AUDIO_ENCODERS, AUDIO_FILE_FORMATS, write_audio
from .muxing import (
    CONTAINER_EXTENSIONS,
    CONTAINERS,
    ProgressCallback,
    can_copy_video,
    container_for_source,
    containers_for_video,
    encode_frames,
    mux_audio_into_video,
    resolve_output_paths,
)
from .outputs import (
    AUDIO_SUFFIXES,
    VIDEO_SUFFIXES,
    audio_format_for,
    check_audio_output,
    check_distinct_outputs,
    check_not_an_input,
    check_output_path,
    check_stream_copy,
    check_video_output,
    check_writable_folder,
    numbered_paths,
    video_container_for,
)
from .reading import (
    WHOLE_FILE,
    FrameChunk,
    TimeWindow,
    VideoFrames,
    VideoInfo,
    iter_video_frames,
    probe_video,
    read_audio,
    read_video_frames,
)
from .sources import MediaSource, as_frame_rate
from .staging import same_file

__all__ = [
    "AUDIO_ENCODERS",
    "AUDIO_FILE_FORMATS",
    "AUDIO_SUFFIXES",
    "CONTAINERS",
    "CONTAINER_EXTENSIONS",
    "VIDEO_SUFFIXES",
    "WHOLE_FILE",
    "FrameChunk",
    "MediaSource",
    "ProgressCallback",
    "TimeWindow",
    "VideoFrames",
    "VideoInfo",
    "as_frame_rate",
    "audio_format_for",
    "can_copy_video",
    "check_audio_output",
    "check_distinct_outputs",
    "check_not_an_input",
    "check_output_path",
    "check_stream_copy",
    "check_video_output",
    "check_writable_folder",
    "container_for_source",
    "containers_for_video",
    "encode_frames",
    "iter_video_frames",
    "mux_audio_into_video",
    "numbered_paths",
    "probe_video",
    "read_audio",
    "read_video_frames",
    "resolve_output_paths",
    "same_file",
    "video_container_for",
    "write_audio",
]
