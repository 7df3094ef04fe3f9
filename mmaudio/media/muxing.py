"""Putting generated audio next to a video: stream copy from a file, or H.264/VP9 encoding from frames.

From a file, the video packets are copied untouched (no generation loss, no re-timing) and the audio is trimmed
or zero-padded to the video stream's exact presentation span, so both streams end together. From frames, the
frames are encoded once into a scratch file that is then muxed the same way, so both paths share one muxer.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from ..errors import InvalidInputError
from .audio import add_audio_track, as_sample_rate, as_waveform_batch, encode_samples, has_encoder, prepare_samples
from .reading import PacketTiming, scan_packet_timing
from .sources import MediaSource, as_frame_rate, describe, first_video_stream, open_media
from .staging import staged_files


@dataclass(frozen=True)
class ContainerSpec:
    """What one output container may hold and how it is written."""

    muxer: str
    extension: str
    default_audio: str
    audio_codecs: tuple[str, ...]
    video_encoders: tuple[str, ...]  # for frames, best first
    options: dict[str, str] = field(default_factory=dict)


CONTAINERS: dict[str, ContainerSpec] = {
    "mp4": ContainerSpec(
        muxer="mp4",
        extension="mp4",
        default_audio="aac",
        audio_codecs=("aac", "opus", "flac"),
        video_encoders=("libx264", "libopenh264", "mpeg4"),
        # faststart puts the index first so browsers (ComfyUI's preview) can play while loading;
        # use_metadata_tags lets mp4 keep arbitrary tags (ComfyUI's prompt and workflow).
        options={"movflags": "use_metadata_tags+faststart"},
    ),
    "mkv": ContainerSpec(
        muxer="matroska",
        extension="mkv",
        default_audio="flac",
        audio_codecs=("aac", "flac", "opus"),
        video_encoders=("libx264", "libopenh264", "mpeg4"),
    ),
    "webm": ContainerSpec(
        muxer="webm",
        extension="webm",
        default_audio="opus",
        audio_codecs=("opus",),
        video_encoders=("libvpx-vp9", "libvpx"),
    ),
    # QuickTime: holds what mp4 holds and more (ProRes, DNxHD), but of our audio codecs only AAC.
    "mov": ContainerSpec(
        muxer="mov",
        extension="mov",
        default_audio="aac",
        audio_codecs=("aac",),
        video_encoders=("libx264", "libopenh264", "mpeg4"),
        options={"movflags": "use_metadata_tags+faststart"},
    ),
}
# Output file extension (lower case, no dot) -> container.
CONTAINER_EXTENSIONS: dict[str, str] = {"mp4": "mp4", "m4v": "mp4", "mov": "mov", "mkv": "mkv", "webm": "webm"}

# ``progress(done, total)``: called while working, e.g. to advance a progress bar or to abort by raising.
ProgressCallback = Callable[[int, int], None]
_PROGRESS_STEPS = 100  # at most this many frame reports per encode (each may reach a UI over a websocket)

# Encoder settings for frames: near-transparent quality at a sane speed.
_VIDEO_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"crf": "18", "preset": "medium"},
    "libvpx-vp9": {"crf": "30", "b": "0", "row-mt": "1", "deadline": "good", "cpu-used": "4"},
    "libvpx": {"crf": "10", "b": "2M"},
}
_VIDEO_BIT_RATES: dict[str, int] = {"mpeg4": 8_000_000, "libopenh264": 8_000_000}
# 4:2:0 encoders that reject odd frame sizes; frames are padded by one edge pixel for them.
_EVEN_SIZE_ENCODERS = {"libx264", "libopenh264", "mpeg4"}


@functools.cache
def _container_codecs(muxer: str) -> frozenset[str] | None:
    """Codec names a muxer accepts (FFmpeg's own table, asked once per muxer), or None when PyAV cannot tell."""
    try:
        with av.open(os.devnull, mode="w", format=muxer) as probe:
            return frozenset(probe.supported_codecs)
    except (AttributeError, av.FFmpegError, OSError):
        return None


def can_copy_video(codec: str, container: str) -> bool:
    """Whether a ``codec`` video stream can be copied into a ``container`` file (True when PyAV cannot tell)."""
    accepted = _container_codecs(CONTAINERS[container].muxer)
    return accepted is None or codec in accepted


def containers_for_video(codec: str) -> list[str]:
    """The containers (of :data:`CONTAINERS`, mp4 first) that can hold a copied ``codec`` video stream."""
    return [name for name in CONTAINERS if can_copy_video(codec, name)]


def source_video_codec(source: MediaSource) -> str:
    """FFmpeg's name of the codec of ``source``'s first video stream ("h264", "vp9", "prores", ...)."""
    with open_media(source) as container:
        return first_video_stream(container, source).codec_context.name


def copy_problem(source: MediaSource, container: str) -> str | None:
    """Why ``source``'s video cannot be stream-copied into a ``container`` file, or None when it can."""
    codec = source_video_codec(source)
    if can_copy_video(codec, container):
        return None
    others = [f".{CONTAINERS[name].extension}" for name in containers_for_video(codec)]
    advice = f"use {', '.join(others[:-1])} or {others[-1]}" if len(others) > 1 else (
        f"use {others[0]}" if others else "no container of ours can hold it")
    return (f"the {codec} video of {describe(source)} cannot be copied into a {container} file without "
            f"re-encoding; {advice}")


def container_for_source(source: MediaSource) -> str:
    """The container a stream copy of ``source``'s video should use: mp4 when it can hold the codec, else mkv."""
    return "mp4" if can_copy_video(source_video_codec(source), "mp4") else "mkv"


def _resolve_container(container: str | None, out_path: Path, source: MediaSource | None) -> str:
    if container not in (None, "auto"):
        if container not in CONTAINERS:
            raise InvalidInputError(f"unknown container {container!r}; expected one of {sorted(CONTAINERS)}")
        return container
    by_extension = CONTAINER_EXTENSIONS.get(out_path.suffix.lstrip(".").lower())
    if by_extension:
        return by_extension
    return container_for_source(source) if source is not None else "mp4"


def _resolve_audio_codec(audio_codec: str | None, name: str) -> str:
    spec = CONTAINERS[name]
    if audio_codec in (None, "auto"):
        return spec.default_audio
    if audio_codec not in spec.audio_codecs:
        raise InvalidInputError(
            f"a {name} file cannot hold {audio_codec!r} audio; choose one of {', '.join(spec.audio_codecs)}"
        )
    return audio_codec


def resolve_output_paths(out_path: Any, count: int) -> list[Path]:
    """One path per waveform: a list of paths, or a pattern with ``{index}`` (0-based) for batches."""
    if isinstance(out_path, (str, os.PathLike)):
        text = os.fspath(out_path)
        if "{index" in text:
            try:
                paths = [Path(text.format(index=i)) for i in range(count)]
            except (KeyError, IndexError, ValueError) as exc:
                raise InvalidInputError(f"bad output path pattern {text!r}: {exc}") from exc
        elif count == 1:
            paths = [Path(text)]
        else:
            raise InvalidInputError(
                f"{count} waveforms need {count} output paths: pass a list, or a pattern containing '{{index}}'"
            )
    elif isinstance(out_path, Sequence):
        paths = [Path(p) for p in out_path]
        if len(paths) != count:
            raise InvalidInputError(f"{count} waveforms need {count} output paths, got {len(paths)}")
    else:
        raise InvalidInputError(f"out_path must be a path, a list of paths or a pattern, got {type(out_path).__name__}")
    if len({p.resolve() for p in paths}) != len(paths):
        raise InvalidInputError("the output paths must all differ")
    return paths


def _check_frames(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if frames.ndim != 4:
        raise InvalidInputError(f"frames must have shape [N, H, W, C], got {tuple(frames.shape)}")
    n, h, w, c = frames.shape
    if n == 0:
        raise InvalidInputError("frames is empty: there is no video to encode")
    if h == 0 or w == 0:
        raise InvalidInputError(f"frames have zero size {w}x{h}")
    if c not in (1, 3, 4):
        raise InvalidInputError(f"frames must have 1, 3 or 4 channels (gray, RGB, RGBA), got {c}")
    if frames.dtype != torch.uint8 and not frames.is_floating_point():
        raise InvalidInputError(f"frames must be uint8 0..255 or float 0..1, got dtype {frames.dtype}")
    return frames


def _frame_rgb(frame: torch.Tensor, index: int) -> np.ndarray:
    """One frame [H, W, C] (uint8, or float 0..1 as ComfyUI's IMAGE) as contiguous RGB uint8."""
    if frame.dtype != torch.uint8:
        frame = frame.detach().to(device="cpu", dtype=torch.float32)
        if not torch.isfinite(frame).all():
            raise InvalidInputError(f"frame {index} contains NaN or infinite values")
        frame = (frame * 255).round_().clamp_(0, 255).to(torch.uint8)
    frame = frame.cpu()
    if frame.shape[-1] == 4:
        frame = frame[..., :3]
    elif frame.shape[-1] == 1:
        frame = frame.expand(*frame.shape[:2], 3)
    return np.ascontiguousarray(frame.numpy())


def _video_encoder(spec: ContainerSpec) -> str:
    for name in spec.video_encoders:
        if has_encoder(name):
            return name
    tried = ", ".join(spec.video_encoders)
    raise InvalidInputError(f"this PyAV build has no video encoder for {spec.extension} (tried {tried})")


def encode_frames(
    frames: torch.Tensor | np.ndarray,
    fps: Any,
    path: str | os.PathLike[str],
    container: str = "mp4",
    progress: ProgressCallback | None = None,
) -> Path:
    """Encode frames [N, H, W, C] (uint8, or float 0..1) at ``fps`` into a video-only file.

    H.264 for mp4/mkv, VP9 for webm. Frame ``i`` is shown at ``i / fps``; the rate is kept exact (30000/1001
    stays 30000/1001). Odd sizes are padded by one replicated edge pixel for 4:2:0 H.264. ``progress(done, N)``
    follows the encoded frames. The file appears only when complete.
    """
    if container not in CONTAINERS:
        raise InvalidInputError(f"unknown container {container!r}; expected one of {sorted(CONTAINERS)}")
    frames = _check_frames(frames)
    rate = as_frame_rate(fps)
    path = Path(path)
    with staged_files() as staged:
        _encode(frames, rate, staged.stage(path), CONTAINERS[container], progress)
    return path


def _encode(
    frames: torch.Tensor, rate: Fraction, path: Path, spec: ContainerSpec, progress: ProgressCallback | None
) -> None:
    encoder = _video_encoder(spec)
    n, height, width = frames.shape[:3]
    pad_h, pad_w = (height % 2, width % 2) if encoder in _EVEN_SIZE_ENCODERS else (0, 0)
    time_base = 1 / rate
    report_every = max(1, n // _PROGRESS_STEPS)
    with av.open(str(path), mode="w", format=spec.muxer) as out:
        stream = out.add_stream(encoder, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width + pad_w, height + pad_h, "yuv420p"
        if encoder in _VIDEO_OPTIONS:
            stream.codec_context.options = dict(_VIDEO_OPTIONS[encoder])
        if encoder in _VIDEO_BIT_RATES:
            stream.codec_context.bit_rate = _VIDEO_BIT_RATES[encoder]
        for index in range(n):
            rgb = _frame_rgb(frames[index], index)
            if pad_h or pad_w:
                rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = index, time_base
            for packet in stream.encode(frame):
                out.mux(packet)
            if progress is not None and ((index + 1) % report_every == 0 or index + 1 == n):
                progress(index + 1, n)
        for packet in stream.encode(None):
            out.mux(packet)


def _add_copied_stream(out: av.container.OutputContainer, template: av.VideoStream) -> av.VideoStream:
    if hasattr(out, "add_stream_from_template"):
        return out.add_stream_from_template(template)
    return out.add_stream(template=template)  # PyAV < 14


def _packet_seconds(packet: av.Packet) -> float:
    stamp = packet.dts if packet.dts is not None else packet.pts
    if stamp is None or packet.time_base is None:
        return float("-inf")  # untimed: keep its place right after the previous packet
    return float(stamp * packet.time_base)


def _write_with_audio(
    source: MediaSource,
    target: Path,
    waveform: torch.Tensor,
    sample_rate: int,
    container: str,
    audio_codec: str,
    timing: PacketTiming,
    metadata: Mapping[str, str],
) -> None:
    """Copy ``source``'s first video stream into ``target`` and add ``waveform`` spanning exactly its frames."""
    spec = CONTAINERS[container]
    with (
        open_media(source) as inp,
        av.open(str(target), mode="w", format=spec.muxer, options=dict(spec.options)) as out,
    ):
        video_in = first_video_stream(inp, source)
        for key, value in metadata.items():
            out.metadata[key] = value
        try:
            video_out = _add_copied_stream(out, video_in)
        except (ValueError, av.FFmpegError) as exc:
            raise InvalidInputError(
                f"the {video_in.codec_context.name} video of {describe(source)} cannot be copied into a {container} "
                f"file ({exc}); choose mkv, which holds almost any codec"
            ) from exc
        track = add_audio_track(out, audio_codec, sample_rate, waveform.shape[0])
        length = round(timing.duration * track.rate)
        samples = prepare_samples(waveform, sample_rate, track, length)
        pending = deque(encode_samples(track, samples, start_pts=round(timing.start * track.rate)))
        for packet in inp.demux(video_in):
            if packet.size == 0:  # end-of-stream marker
                continue
            moment = _packet_seconds(packet)
            while pending and _packet_seconds(pending[0]) <= moment:
                out.mux(pending.popleft())
            packet.stream = video_out
            out.mux(packet)
        while pending:
            out.mux(pending.popleft())


def _scan(source: MediaSource) -> PacketTiming:
    with open_media(source) as container:
        return scan_packet_timing(container, first_video_stream(container, source), source)


def mux_audio_into_video(
    video: MediaSource | torch.Tensor | np.ndarray,
    waveform: torch.Tensor | np.ndarray,
    sample_rate: int,
    out_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    fps: Any = None,
    container: str | None = None,
    audio_codec: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> list[Path]:
    """Write one video per waveform: ``video``'s picture with the waveform as its only audio track.

    ``video`` is a file (path or binary file object), whose video stream is copied without re-encoding, or
    frames [N, H, W, C] (uint8, or float 0..1) with ``fps``, encoded to H.264 (mp4, mkv) or VP9 (webm).
    ``waveform`` is [C, T] or [B, C, T] (C = 1 or 2) at ``sample_rate``; each is trimmed or zero-padded to the
    video's duration. ``out_path``: a path (B = 1), a list of B paths, or a pattern with ``{index}``.
    ``container``: "mp4", "mkv", "webm", "mov", or None/"auto" (from the extension, else mp4 when the copied
    codec fits). A copied video stream must fit the container (h264 does not fit webm): checked before writing.
    ``audio_codec``: "aac", "flac", "opus", or None/"auto" (AAC in mp4 and mov, FLAC in mkv, Opus in webm).
    ``metadata``: container tags (values that are not strings are written with ``str``).
    ``progress(done, total)``: called per encoded frame (throttled) and per written file; an exception it raises
    (a user's cancel) aborts the call like any other failure.
    Returns the written paths. Files appear only when all are complete; on error nothing is left behind.
    """
    batch = as_waveform_batch(waveform)
    rate = as_sample_rate(sample_rate)
    outputs = resolve_output_paths(out_path, batch.shape[0])
    from_frames = isinstance(video, (torch.Tensor, np.ndarray))
    if from_frames:
        frames = _check_frames(video)
        frame_rate = as_frame_rate(fps)
    elif fps is not None:
        raise InvalidInputError("fps applies to frames only; a video file keeps its own timing")
    name = _resolve_container(container, outputs[0], None if from_frames else video)
    codec = _resolve_audio_codec(audio_codec, name)
    problem = None if from_frames else copy_problem(video, name)
    if problem is not None:
        raise InvalidInputError(problem)
    tags = {str(k): str(v) for k, v in (metadata or {}).items()}
    encode_units = frames.shape[0] if from_frames else 0
    total = encode_units + len(outputs)

    def report(done: int) -> None:
        if progress is not None:
            progress(done, total)

    inputs = [video] if isinstance(video, (str, os.PathLike)) else []
    with staged_files(protect=inputs) as staged:
        source: MediaSource
        if from_frames:
            source = staged.scratch(outputs[0], f".{name}")
            _encode(frames, frame_rate, source, CONTAINERS[name], lambda done, _: report(done))
        else:
            source = video
        timing = _scan(source)
        for index, final in enumerate(outputs):
            try:
                _write_with_audio(source, staged.stage(final), batch[index], rate, name, codec, timing, tags)
            except av.FFmpegError as exc:
                raise InvalidInputError(f"could not write '{final}' from {describe(source)}: {exc}") from exc
            report(encode_units + index + 1)
    return outputs
