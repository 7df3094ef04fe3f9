"""Streaming frame choice (mmaudio.features.streaming) equals decoding the whole clip first, with one chunk held.

Every comparison is against the decode-everything path (read_video_frames -> plan_frames over the decoded
timestamps -> prepare_frames) on the same file and decoding limit: indices, slot times, durations and uint8 pixels
must be identical. Golden cases are discovered from the fixture folder, synthetic clips are written here.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import tracemalloc
import weakref
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch

from mmaudio import engine, media
from mmaudio.errors import InvalidInputError
from mmaudio.features import frames as fr
from mmaudio.features import synchformer as sf
from mmaudio.features.extractor import FeatureExtractor
from mmaudio.features.streaming import DECODE_MARGIN_S, FrameStreamer, VideoFile, prepare_frames_streaming

from .parity.cases import GoldenCase, discover_cases

VIDEO_CASES = [c for c in (GoldenCase.from_file(p) for p in discover_cases()) if c.kind == "video"]


# ----------------------------------------------------------------------------------------------- helpers


def decode_all(path: Path | str, duration: float | None, max_duration: float | None = None) -> fr.PreparedFrames:
    """The path streaming replaces: every frame decoded into one tensor, then planned and prepared."""
    video = media.read_video_frames(path, max_duration=max_duration)
    plan = fr.plan_frames(video.frames.shape[0], times=video.timestamps, duration=duration)
    return fr.prepare_frames(video.frames, plan)


def assert_same(got: fr.PreparedFrames, want: fr.PreparedFrames, what: str) -> None:
    g, w = got.plan, want.plan
    assert g.num_source_frames == w.num_source_frames, f"{what}: {g.num_source_frames} != {w.num_source_frames}"
    assert g.clip_indices == w.clip_indices, f"{what}: CLIP source indices differ"
    assert g.sync_indices == w.sync_indices, f"{what}: Synchformer source indices differ"
    assert g.clip_times == w.clip_times and g.sync_times == w.sync_times, f"{what}: slot times differ"
    assert g.duration == w.duration and g.requested_duration == w.requested_duration, f"{what}: durations differ"
    assert got.clip_u8.dtype == torch.uint8 and got.sync_u8.dtype == torch.uint8
    assert got.clip_u8.shape == want.clip_u8.shape and got.sync_u8.shape == want.sync_u8.shape, what
    assert torch.equal(got.clip_u8, want.clip_u8), f"{what}: CLIP pixels differ"
    assert torch.equal(got.sync_u8, want.sync_u8), f"{what}: Synchformer pixels differ"


def write_clip(path: Path, times_ms: list[int] | None = None, *, fps: Fraction | int = 30, count: int = 0,
               size: tuple[int, int] = (60, 80), seed: int = 0) -> Path:
    """An H.264 mp4 whose frames all differ (moving square over a gradient, light noise).

    ``times_ms``: explicit presentation times (a variable frame rate); else ``count`` frames at ``fps``.
    """
    height, width = size
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"}
        if times_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.time_base = Fraction(1, 1000)
        n = len(times_ms) if times_ms is not None else count
        for i in range(n):
            image = np.stack([(xs * 3 + i * 5) % 256, (ys * 4) % 256, (xs + ys + i * 9) % 256], -1)
            x = (4 + 3 * i) % max(1, width - 12)
            image[height // 3:height // 3 + 12, x:x + 12] = 250
            image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
            else:
                frame.pts, frame.time_base = i, 1 / Fraction(fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def vfr_times_ms(count: int, seed: int = 3) -> list[int]:
    rng = random.Random(seed)
    times = [0]
    for _ in range(count - 1):
        times.append(times[-1] + rng.choice([17, 33, 40, 50, 67, 120]))
    return times


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("streaming_clips")
    return {
        "12fps": write_clip(folder / "c12.mp4", fps=12, count=38, seed=1),
        "24fps": write_clip(folder / "c24.mp4", fps=24, count=75, size=(80, 60), seed=2),  # portrait
        "29.97fps": write_clip(folder / "c2997.mp4", fps=Fraction(30000, 1001), count=92, seed=3),
        "30fps": write_clip(folder / "c30.mp4", fps=30, count=91, size=(48, 96), seed=4),
        "vfr": write_clip(folder / "vfr.mp4", vfr_times_ms(70), seed=5),
    }


# ----------------------------------------------------------------------------------------------- equality


@pytest.mark.parametrize("case", VIDEO_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("which", ["clip length", "requested"])
def test_golden_video_streamed_equals_decoded_whole(case: GoldenCase, which: str) -> None:
    path = case.file(case.spec["mp4"])
    duration = float(case.spec["requested_duration"]) if which == "requested" else None
    want = decode_all(path, duration)
    for chunk_size in (1, 7, 64):
        got = prepare_frames_streaming(media.iter_video_frames(path, chunk_size=chunk_size), duration=duration)
        assert_same(got, want, f"{case.name}, duration {duration}, chunks of {chunk_size}")
    if duration is not None:  # and both are the reference's choice
        io = case.io()
        assert list(got.plan.clip_indices) == io[case.spec["clip"]["src_index_key"]].tolist()
        assert list(got.plan.sync_indices) == io[case.spec["sync"]["src_index_key"]].tolist()
        assert math.isclose(got.duration, case.spec["effective_duration"], rel_tol=0, abs_tol=1e-9)


@pytest.mark.parametrize("name", ["12fps", "24fps", "29.97fps", "30fps", "vfr"])
@pytest.mark.parametrize("duration", [None, 1.7])
def test_synthetic_clip_streamed_equals_decoded_whole(clips: dict[str, Path], name: str,
                                                      duration: float | None) -> None:
    path = clips[name]
    file = VideoFile.open(path, duration=duration, chunk_size=5)
    want = decode_all(path, duration, max_duration=file.max_duration)
    got, times = file.prepare()
    assert_same(got, want, f"{name}, duration {duration}")
    decoded = media.read_video_frames(path, max_duration=file.max_duration)
    assert times.dtype == torch.float64 and torch.equal(times, decoded.timestamps), "the time of every frame read"
    if duration is None:
        assert file.max_duration is None and got.duration > 2.5
    else:
        assert file.max_duration == duration + DECODE_MARGIN_S and duration - 0.05 < got.duration <= duration
    if name == "vfr":  # the clip really is irregular, so frames are chosen by their own times
        steps = torch.diff(times)
        assert steps.max() > 2 * steps.min()


def test_longest_bounds_a_clip_length_duration(clips: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    """The node layer's widget limit: a file longer than ``longest`` is read for ``longest`` seconds."""
    path = clips["30fps"]  # ~3 s
    with caplog.at_level("WARNING"):
        file = VideoFile.open(path, longest=2.0)
    assert file.duration == 2.0 and file.max_duration == 2.0 + DECODE_MARGIN_S
    assert "first 2.0 s" in caplog.text
    assert_same(file.prepare()[0], decode_all(path, 2.0, max_duration=file.max_duration), "longest")
    assert VideoFile.open(path, longest=60.0).duration is None  # shorter files keep their own length
    assert file.for_duration(1.0).duration == 1.0 and file.for_duration(None).duration is None


def test_float_image_chunks_equal_the_image_batch() -> None:
    """Chunks of a ComfyUI IMAGE (float 0..1) stream like decoded uint8 chunks."""
    image = torch.rand(50, 36, 52, 3)
    times = torch.tensor(fr.frame_times(50, 24), dtype=torch.float64)
    want = fr.prepare_frames(image, fr.plan_frames(50, times=times))
    got = prepare_frames_streaming((image[i:i + 6], times[i:i + 6]) for i in range(0, 50, 6))
    assert_same(got, want, "IMAGE chunks")


def test_one_frame_file_is_a_still_image(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "one.mp4", fps=25, count=1)
    got, times = VideoFile.open(path, duration=1.5).prepare()
    assert got.plan.is_still and times.tolist() == [0.0] and got.sync_u8.shape[0] == 0
    assert_same(got, decode_all(path, 1.5, max_duration=1.5 + DECODE_MARGIN_S), "one frame")
    with pytest.raises(InvalidInputError, match="explicit duration"):
        VideoFile.open(path).prepare()


def test_unlimited_rule_fills_a_few_slots_beyond_the_plan_and_keeps_them_in_place(clips: dict[str, Path]) -> None:
    """Without a duration the clocks run to the end; the plan keeps a prefix, so almost nothing is wasted, and
    with the length known up front the kept frames are the buffer written while decoding, not a copy of it."""
    file = VideoFile.open(clips["30fps"], chunk_size=8)
    streamer = FrameStreamer(expected_duration=file.expected_duration)
    for chunk in file.chunks():
        streamer.add(chunk.frames, chunk.timestamps)
    clip_filled, sync_filled = streamer.slots_filled
    prepared = streamer.finish()
    assert len(prepared.plan.clip_indices) <= clip_filled <= len(prepared.plan.clip_indices) + 3
    assert len(prepared.plan.sync_indices) <= sync_filled <= len(prepared.plan.sync_indices) + 3
    assert prepared.clip_u8._is_view() and prepared.sync_u8._is_view()
    assert_same(prepared, decode_all(clips["30fps"], None), "sized up front")

    grown = FrameStreamer(expected_duration=0.5)  # too small a guess: blocks are added, the result is the same
    for chunk in file.chunks():
        grown.add(chunk.frames, chunk.timestamps)
    assert_same(grown.finish(), prepared, "grown buffers")


# ----------------------------------------------------------------------------------------------- trim windows


def comfy_trim(video: media.VideoFrames, start: float, length: float | None) -> list[int]:
    """Rows of a whole decode that ComfyUI's trimmed ``get_components()`` keeps: int(start/tb) <= pts < end."""
    first = int(start / video.time_base)
    end = None if length is None else int((start + length) / video.time_base)
    return [i for i, pts in enumerate(video.pts.tolist()) if pts >= first and (end is None or pts < end)]


def decode_window(path: Path, start: float, length: float | None, duration: float | None = None,
                  max_duration: float | None = None) -> fr.PreparedFrames:
    """The whole decode cut to the window and timed from its first frame (exact: pts differences times tb),
    up to ``max_duration`` seconds into the window as a streamed read stops."""
    video = media.read_video_frames(path)
    rows = comfy_trim(video, start, length)
    pts = video.pts[rows].tolist()
    times = [float((p - pts[0]) * video.time_base) for p in pts]
    if max_duration is not None:
        rows = [r for r, t in zip(rows, times, strict=True) if t <= max_duration]
        times = times[:len(rows)]
    plan = fr.plan_frames(len(rows), times=times, duration=duration)
    return fr.prepare_frames(video.frames[rows], plan)


TRIMS = [  # (clip, start, length, requested duration): starts on and between frames, windows past the end
    ("30fps", 1.0, 1.5, None),  # on a frame boundary
    ("29.97fps", 0.51, 1.9, None),  # between frames (the first kept frame is 0.024 s after the start)
    ("29.97fps", 0.51, None, 1.2),  # to the end, with a requested duration
    ("24fps", 1.23, 10.0, None),  # between frames and running past the end of the file
    ("12fps", 0.05, 60.0, None),
    ("vfr", 0.37, 1.6, None),
]


@pytest.mark.parametrize(("name", "start", "length", "duration"), TRIMS)
def test_trim_window_streams_the_whole_decode_cut_to_the_window(clips: dict[str, Path], name: str, start: float,
                                                                 length: float | None,
                                                                 duration: float | None) -> None:
    path = clips[name]
    file = VideoFile.open(path, duration=duration, start=start, length=length, chunk_size=4)
    got, times = file.prepare()
    want = decode_window(path, start, length, duration, max_duration=file.max_duration)
    assert_same(got, want, f"{name} [{start}, +{length})")
    assert times.numel() == want.plan.num_source_frames
    assert times[0].item() == 0.0, "timed from the window's first frame"
    assert abs(file.expected_duration - min(duration or math.inf, file.window.seconds_of(file.info))) < 1e-9
    if name != "vfr":  # a constant rate: the same frames as ComfyUI's trimmed components at their frame rate
        video = media.read_video_frames(path)
        components = fr.plan_frames(len(comfy_trim(video, start, length)), video.fps, duration=duration)
        assert got.plan.clip_indices == components.clip_indices
        assert got.plan.sync_indices == components.sync_indices
        assert got.plan.duration == components.duration


def test_trim_window_is_cut_by_pts_like_comfyui(clips: dict[str, Path]) -> None:
    """Boundaries: a frame exactly at the start is kept, one exactly at the end is not; starting between frames
    takes the next one; a window running past the end stops at the last frame."""
    path = clips["30fps"]  # 91 frames at 1/30 s
    video = media.read_video_frames(path)

    pts = video.pts.tolist()

    def kept(start: float, length: float | None) -> list[int]:
        chunks = media.iter_video_frames(path, chunk_size=16, window=media.TimeWindow(start, length))
        return [pts.index(p) for chunk in chunks for p in chunk.pts.tolist()]

    assert kept(1.0, 0.5) == comfy_trim(video, 1.0, 0.5) == list(range(30, 45))
    assert kept(1.01, 0.5) == comfy_trim(video, 1.01, 0.5) and kept(1.01, 0.5)[0] == 31
    assert kept(2.5, 100.0) == comfy_trim(video, 2.5, 100.0) == list(range(75, 91))
    assert kept(0.0, 1.0) == list(range(30)), "a trim of only the end keeps the start"
    window = torch.cat([c.frames for c in media.iter_video_frames(path, window=media.TimeWindow(1.0, 0.5))])
    assert torch.equal(window, video.frames[30:45]), "the pixels of those frames"


def test_bad_trim_windows_are_rejected(clips: dict[str, Path]) -> None:
    with pytest.raises(InvalidInputError, match="trim window"):
        VideoFile.open(clips["30fps"], start=50.0).prepare()
    with pytest.raises(InvalidInputError, match="window start"):
        VideoFile.open(clips["30fps"], start=-1.0)
    with pytest.raises(InvalidInputError, match="window length"):
        VideoFile.open(clips["30fps"], start=1.0, length=0.0)


def test_longest_bounds_a_trimmed_clip(clips: dict[str, Path]) -> None:
    path = clips["30fps"]  # ~3 s
    file = VideoFile.open(path, start=0.5, longest=2.0)  # 2.5 s of the file are left after the start
    assert file.duration == 2.0 and file.window == media.TimeWindow(0.5, None)
    assert VideoFile.open(path, start=1.5, longest=2.0).duration is None  # 1.5 s left: its own length
    again = file.for_duration(1.0)
    assert again.window == file.window and again.duration == 1.0
    want = decode_window(path, 0.5, None, 1.0, max_duration=again.max_duration)
    assert_same(again.prepare()[0], want, "for_duration keeps the trim")


# ----------------------------------------------------------------------------------------------- memory


def watched_chunks(path: Path, chunk_size: int, alive: list[int]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Decoded chunks in arrays of our own; before decoding each next chunk, records how many earlier ones live."""
    refs: list[weakref.ref] = []
    for chunk in media.iter_video_frames(path, chunk_size=chunk_size):
        frames = chunk.frames.numpy().copy()
        times = chunk.timestamps.clone()
        del chunk
        alive.append(sum(ref() is not None for ref in refs))
        refs.append(weakref.ref(frames))
        yield torch.from_numpy(frames), times  # the tensor keeps the array (and so the weakref) alive
        del frames
    alive.append(sum(ref() is not None for ref in refs))


def test_at_most_one_full_resolution_chunk_is_alive(clips: dict[str, Path]) -> None:
    alive: list[int] = []
    streamer = FrameStreamer()
    prepared = streamer.consume(watched_chunks(clips["29.97fps"], 4, alive))
    assert len(alive) > 20
    assert max(alive) == 0, f"earlier chunks still alive while decoding: {alive}"
    del prepared
    # The watcher does see chunks a consumer keeps (what decoding everything first does).
    kept: list[int] = []
    held = list(watched_chunks(clips["29.97fps"], 4, kept))
    assert kept[-1] == len(held) > 20


def test_decoding_memory_is_one_chunk_not_the_clip(tmp_path: Path) -> None:
    """tracemalloc sees the decoder's numpy buffers (not torch's resized frames): one chunk at a time."""
    size, count, chunk = (240, 320), 90, 4
    path = write_clip(tmp_path / "big.mp4", fps=30, count=count, size=size)
    frame_bytes = size[0] * size[1] * 3
    file = VideoFile.open(path, chunk_size=chunk)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        prepared, _ = file.prepare()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    bound = (chunk + 2) * frame_bytes + 512 * 1024
    assert peak <= bound, f"peak {peak / 2**20:.2f} MiB > {bound / 2**20:.2f} MiB"
    assert count * frame_bytes > 5 * bound  # the whole clip would not fit under it
    assert prepared.plan.num_source_frames == count


# ----------------------------------------------------------------------------------------------- progress, errors


def test_progress_follows_chunks_and_can_interrupt(clips: dict[str, Path]) -> None:
    calls: list[tuple[int, int]] = []
    file = VideoFile.open(clips["30fps"], chunk_size=10)
    file.prepare(progress=lambda done, total: calls.append((done, total)))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-1] == (91, 91) and len(calls) >= 10

    class StopError(Exception):
        pass

    pulled: list[int] = []

    def chunks() -> Iterator[media.FrameChunk]:
        for chunk in media.iter_video_frames(clips["30fps"], chunk_size=10):
            pulled.append(chunk.frames.shape[0])
            yield chunk

    def stop(done: int, total: int) -> None:
        if done >= 20:
            raise StopError

    with pytest.raises(StopError):
        prepare_frames_streaming(chunks(), progress=stop)
    assert len(pulled) == 2, "decoding must stop at the chunk where progress raised"


def test_bad_streams_are_rejected() -> None:
    a = torch.zeros(3, 16, 16, 3, dtype=torch.uint8)
    with pytest.raises(InvalidInputError, match="one size"):
        prepare_frames_streaming([(a, [0.0, 0.04, 0.08]), (torch.zeros(2, 8, 16, 3, dtype=torch.uint8), [0.12, 0.16])])
    with pytest.raises(InvalidInputError, match="presentation order"):
        prepare_frames_streaming([(a, [0.0, 0.04, 0.08]), (a, [0.07, 0.1, 0.2])])
    with pytest.raises(InvalidInputError, match="timestamps"):
        prepare_frames_streaming([(a, [0.0, 0.04])])
    with pytest.raises(InvalidInputError, match="zero frames"):
        prepare_frames_streaming([])
    with pytest.raises(InvalidInputError, match="duration"):
        prepare_frames_streaming([(a, [0.0, 0.04, 0.08])], duration=-1.0)
    with pytest.raises(InvalidInputError, match="segment"):
        prepare_frames_streaming([(a, [0.0, 0.04, 0.08])])
    with pytest.raises(InvalidInputError, match="chunks"):
        prepare_frames_streaming([a])  # type: ignore[list-item]


# ----------------------------------------------------------------------------------------------- engine


class _StubClip(torch.nn.Module):
    """CLIP stand-in: a frame's 'embedding' is its mean pixel value; a text's is its length. ``events`` notes
    each forward (the node-layer test reads the progress bar against them)."""

    def __init__(self, events: list | None = None) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.events = events if events is not None else []

    def encode_images(self, x: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        self.events.append(("clip", x.shape[0]))
        return x.mean(dim=(1, 2, 3)).unsqueeze(-1).expand(-1, 1024)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        self.events.append(("text", len(prompts)))
        return torch.tensor([float(len(p)) for p in prompts]).view(-1, 1, 1).expand(-1, 77, 1024)

    def memory_for_images(self, batch: int) -> int:
        return 0

    def memory_for_text(self, prompts: int) -> int:
        return 0


class _StubSynchformer(torch.nn.Module):
    """Synchformer stand-in: each of a segment's 8 'features' is the mean of its 2-frame tubelet."""

    cfg = sf.MotionFormerConfig()
    dtype = torch.float32

    def __init__(self, events: list | None = None) -> None:
        super().__init__()
        self.pos_embed = torch.nn.Parameter(torch.zeros(1))
        self.events = events if events is not None else []

    def forward(self, segments: torch.Tensor) -> torch.Tensor:
        self.events.append(("sync", segments.shape[0]))
        return segments.reshape(segments.shape[0], 8, -1).mean(-1).unsqueeze(-1).expand(-1, -1, 768)

    def memory_for_segments(self, batch: int, dtype: torch.dtype | None = None) -> int:
        return 0


class _RecordingRuntime:
    """A CPU runtime that notes the units planned and every progress report, per stage."""

    def __init__(self) -> None:
        self.units: dict[str, int] = {}
        self.reports: dict[str, list[tuple[int, int]]] = {}

    @contextlib.contextmanager
    def stage(self, name, models, memory_required=0):  # type: ignore[no-untyped-def]
        yield

    def plan(self, units) -> None:  # type: ignore[no-untyped-def]
        self.units.update(units)

    def progress(self, stage: str, done: int, total: int) -> None:
        self.reports.setdefault(stage, []).append((done, total))


def stub_feature_models(events: list | None = None) -> engine.FeatureModels:
    cpu = torch.device("cpu")
    return engine.FeatureModels(clip=engine.Placed(_StubClip(events), cpu, torch.float32),  # type: ignore[arg-type]
                                synchformer=engine.Placed(_StubSynchformer(events), cpu,  # type: ignore[arg-type]
                                                          torch.float32))


@pytest.mark.parametrize("duration", [1.7, None])
def test_engine_stream_equals_whole_clip(clips: dict[str, Path], duration: float | None) -> None:
    """Encoding a VIDEO file (streamed, by its own timestamps) gives exactly the features of encoding its decoded
    frames with those timestamps."""
    models = stub_feature_models()
    prompts = engine.parse_prompts("a\nb")
    path = clips["vfr"]
    video = media.read_video_frames(path)
    whole_runtime, stream_runtime = _RecordingRuntime(), _RecordingRuntime()
    whole = engine.encode_conditions(models, engine.VisualSource.from_images(video.frames, times=video.timestamps),
                                     prompts, duration=duration, mask_away_clip=False, runtime=whole_runtime)
    streamed = engine.encode_conditions(models, engine.VisualSource.from_file(VideoFile.open(path, chunk_size=6)),
                                        prompts, duration=duration, mask_away_clip=False, runtime=stream_runtime)
    assert streamed.source == whole.source == "video" and streamed.windows.is_single
    assert streamed.duration == whole.duration and streamed.windows == whole.windows
    assert (duration - 0.05 < streamed.duration <= duration) if duration else streamed.duration > 2.5
    assert streamed.clip_features is not None and whole.clip_features is not None
    assert torch.equal(streamed.clip_features, whole.clip_features)
    assert streamed.sync_features is not None and whole.sync_features is not None
    assert torch.equal(streamed.sync_features, whole.sync_features)
    assert torch.equal(streamed.text_features, whole.text_features) and streamed.num_rows == 2
    assert streamed.clip_features.std() > 0 and streamed.sync_features.std() > 0  # the frames really differ
    # the clip as read from the file: its first frames, with the decoder's own times
    read = streamed.clip.num_frames
    assert 0 < read <= video.frames.shape[0] and torch.equal(streamed.clip.frame_times, video.timestamps[:read])
    frames = stream_runtime.reports["frames"]
    assert frames[-1] == (read, read) and [d for d, _ in frames] == sorted(d for d, _ in frames)
    assert len(frames) > read // 6, "the frames stage reports every chunk"
    for stage in ("clip", "sync", "text"):
        assert stream_runtime.reports[stage][-1][0] == stream_runtime.reports[stage][-1][1], stage
    prepared, _ = VideoFile.open(path, duration=1.0).prepare()
    with pytest.raises(InvalidInputError, match="Synchformer is not loaded"):
        FeatureExtractor(clip=_StubClip()).encode_sync_frames(prepared)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- node layer


def node_feature_models(pack_name: str, events: list | None = None):  # type: ignore[no-untyped-def]
    """What the encode node gets from the feature-models loader: stub models under the memory manager's stub."""
    pack_engine = sys.modules[f"{pack_name}.mmaudio.engine"]
    patcher_class = sys.modules["comfy.model_patcher"].ModelPatcher
    cpu = torch.device("cpu")
    clip, sync = _StubClip(events), _StubSynchformer(events)
    clip_patcher, sync_patcher = patcher_class(clip, cpu, cpu), patcher_class(sync, cpu, cpu)
    models = pack_engine.FeatureModels(clip=pack_engine.Placed(clip, cpu, torch.float32, clip_patcher),
                                       synchformer=pack_engine.Placed(sync, cpu, torch.float32, sync_patcher))
    return SimpleNamespace(models=models, clip=clip_patcher, synchformer=sync_patcher)


def spy_on_prepare(streaming, monkeypatch: pytest.MonkeyPatch) -> list:  # type: ignore[no-untyped-def]
    """Every (prepared frames, timestamps) a VideoFile of the pack gives, as the engine asks for them."""
    seen: list = []
    original = streaming.VideoFile.prepare

    def prepare(self, **kwargs):  # type: ignore[no-untyped-def]
        result = original(self, **kwargs)
        seen.append(result)
        return result

    monkeypatch.setattr(streaming.VideoFile, "prepare", prepare)
    return seen


def test_node_layer_streams_a_file_backed_video(clips: dict[str, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from .pack_loader import PACK_NAME, stubbed_pack

    with stubbed_pack(tmp_path) as _pack:
        adapters = sys.modules[f"{PACK_NAME}.nodes.adapters"]
        streaming = sys.modules[f"{PACK_NAME}.mmaudio.features.streaming"]
        errors = sys.modules[f"{PACK_NAME}.mmaudio.errors"]
        utils, mm = sys.modules["comfy.utils"], sys.modules["comfy.model_management"]
        path = clips["24fps"]

        class FileVideo:
            def get_stream_source(self) -> str:
                return str(path)

            def get_components(self):  # type: ignore[no-untyped-def]
                raise AssertionError("a file-backed VIDEO must be read from its file")

        source = adapters.visual_source(None, None, FileVideo())
        assert isinstance(source.file, streaming.VideoFile), "read from its file"
        assert source.frames is None and source.times is None, "probed, not decoded"
        assert source.file.expected_frames == 75  # from the header
        with pytest.raises(errors.InvalidInputError, match="not both"):
            adapters.visual_source(torch.zeros(30, 8, 8, 3), 24.0, FileVideo())

        events: list = []
        features = node_feature_models(PACK_NAME, events)
        prepares = spy_on_prepare(streaming, monkeypatch)
        utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: events.append(
            ("bar", value, total)))
        try:
            conditions = adapters.encode_conditions(features, source, "rain", "", 2.0, False)
        finally:
            utils.set_progress_bar_global_hook(None)
        assert len(prepares) == 1
        prepared, times = prepares[0]
        want = decode_all(path, 2.0, max_duration=2.0 + DECODE_MARGIN_S)
        assert_same(prepared, want, "node layer")
        assert conditions.duration == want.duration and conditions.clip.num_frames == times.numel()

        # One bar: the frames range (per chunk), then CLIP, Synchformer and text, each in its own range.
        frame_units = source.file.for_duration(2.0, longest=adapters.MAX_DURATION_S).expected_frames
        clip_units, sync_units = 16, sf.num_segments(50)
        bars = [(i, e[1], e[2]) for i, e in enumerate(events) if e[0] == "bar"]
        values = [v for _, v, _ in bars]
        assert values == sorted(values) and {t for _, _, t in bars} == {frame_units + clip_units + sync_units + 1}
        assert values[-1] == frame_units + clip_units + sync_units + 1

        def bar_before(kind: str) -> list[int]:
            first = next(i for i, e in enumerate(events) if e[0] == kind)
            return [v for i, v, _ in bars if i < first]

        assert len(bar_before("clip")) >= 3, "the frames range advances per chunk"
        assert bar_before("clip")[-1] == frame_units, "CLIP starts where the frames range ends"
        assert bar_before("sync")[-1] == frame_units + clip_units, "then Synchformer"
        assert bar_before("text")[-1] == frame_units + clip_units + sync_units, "then the text"

        pulled: list[int] = []
        original = streaming.VideoFile.chunks

        def counted(self):  # type: ignore[no-untyped-def]
            for chunk in original(self):
                pulled.append(1)
                yield chunk

        monkeypatch.setattr(streaming.VideoFile, "chunks", counted)

        def cancel(value, total, preview, node_id=None):  # type: ignore[no-untyped-def]
            mm.interrupt_current_processing(True)

        utils.set_progress_bar_global_hook(cancel)
        try:
            with pytest.raises(mm.InterruptProcessingException):
                adapters.encode_conditions(node_feature_models(PACK_NAME), adapters.visual_source(None, None,
                                                                                                  FileVideo()),
                                           "rain", "", 0.0, False)
        finally:
            utils.set_progress_bar_global_hook(None)
            mm.interrupt_current_processing(False)
        assert len(pulled) == 2, "a Cancel takes effect at the next chunk"


class TrimmedFileVideo:
    """ComfyUI's VideoFromFile as a trimmed view: the whole file behind it, the trim beside it, and
    ``get_components()`` keeping the frames ComfyUI keeps, at the stream's frame rate."""

    def __init__(self, path: Path, start: float, duration: float, *, edited: bool = False) -> None:
        self.path, self.start, self.duration, self.edited = path, start, duration, edited
        self.components_calls = 0

    def get_stream_source(self) -> str:
        return str(self.path)

    def get_active_trim_window(self) -> tuple[float, float]:
        return self.start, self.duration

    def has_pending_frame_edits(self) -> bool:
        return self.edited

    def get_components(self):  # type: ignore[no-untyped-def]
        self.components_calls += 1
        video = media.read_video_frames(self.path)
        rows = comfy_trim(video, self.start, self.duration or None)
        return sys.modules["comfy_api.latest"].Types.VideoComponents(images=video.frames[rows].float() / 255,
                                                                     frame_rate=video.fps)


@pytest.mark.parametrize(("start", "duration"), [(0.51, 1.9), (1.0, 0.0), (0.0, 2.2)])
def test_node_layer_streams_a_trimmed_file_video_like_its_components(clips: dict[str, Path], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch, start: float,
                                                                     duration: float) -> None:
    """A trimmed VIDEO (core Trim Video) is read from its file with the trim applied, never decoded whole, and
    gives the frames that its ``get_components()`` gives; one with frame edits still goes through those."""
    from .pack_loader import PACK_NAME, stubbed_pack

    with stubbed_pack(tmp_path) as _pack:
        adapters = sys.modules[f"{PACK_NAME}.nodes.adapters"]
        latest = sys.modules["comfy_api.latest"]
        trimmed = TrimmedFileVideo(clips["29.97fps"], start, duration)

        source = adapters.visual_source(None, None, trimmed)
        assert source.file is not None and (source.file.window.start, source.file.window.length) == (
            start, duration or None)
        prepares = spy_on_prepare(sys.modules[f"{PACK_NAME}.mmaudio.features.streaming"], monkeypatch)
        streamed = adapters.encode_conditions(node_feature_models(PACK_NAME), source, "rain", "", 0.0, False)
        assert trimmed.components_calls == 0, "streamed from the file, not decoded whole"
        assert len(prepares) == 1
        prepared, _ = prepares[0]

        whole = adapters.visual_source(None, None, latest.InputImpl.VideoFromComponents(trimmed.get_components()))
        assert whole.file is None and whole.frames is not None
        plan = fr.plan_frames(fr.frame_count(whole.frames), whole.fps)
        assert_same(prepared, fr.prepare_frames(whole.frames, plan), f"trim ({start}, {duration})")
        decoded = adapters.encode_conditions(node_feature_models(PACK_NAME), whole, "rain", "", 0.0, False)
        assert decoded.duration == streamed.duration
        assert torch.equal(decoded.clip_features, streamed.clip_features)
        assert torch.equal(decoded.sync_features, streamed.sync_features)

        edited = TrimmedFileVideo(clips["29.97fps"], start, duration, edited=True)
        assert adapters.visual_source(None, None, edited).file is None and edited.components_calls == 1


def test_a_video_that_may_hold_a_crop_it_cannot_report_is_not_streamed(tmp_path: Path) -> None:
    """A VIDEO class with its own lazy ``as_cropped`` but no ``has_pending_frame_edits`` (an in-between ComfyUI)
    could hold a crop of its file: only get_components() is sure to apply it. ComfyUI's default
    ``VideoInput.as_cropped`` materialises the frames, so it does not count."""
    from .pack_loader import PACK_NAME, stubbed_pack

    with stubbed_pack(tmp_path) as _pack:
        video_files = sys.modules[f"{PACK_NAME}.nodes.video_files"]

        class VideoInput:  # ComfyUI's abstract base: as_cropped goes through get_components()
            def as_cropped(self, x: int = 0, y: int = 0, width: int = 0, height: int = 0) -> None:
                raise AssertionError("not called")

        class PlainFile(VideoInput):
            def get_stream_source(self) -> str:
                return "clip.mp4"

        class LazyCropper(PlainFile):
            def as_cropped(self, x: int = 0, y: int = 0, width: int = 0, height: int = 0) -> None:
                raise AssertionError("not called")

        class ReportingCropper(LazyCropper):
            def has_pending_frame_edits(self) -> bool:
                return False

        assert video_files.file_view_of(PlainFile()).source == "clip.mp4"
        assert video_files.file_view_of(LazyCropper()) is None
        assert video_files.unedited_file_of(LazyCropper()) is None
        assert video_files.file_view_of(ReportingCropper()).source == "clip.mp4"
