"""mmaudio.media against synthetic clips made here with PyAV: exact timing, stream copy, atomic bad-input handling."""

from __future__ import annotations

import io
import math
import os
import stat
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from mmaudio import media
from mmaudio.errors import InvalidInputError
from mmaudio.media import muxing

SQUARE = 8


def square_x(index: int, step: int) -> int:
    """Left edge of the moving square in frame ``index``."""
    return 4 + step * index


def square_frames(count: int, height: int, width: int, step: int) -> np.ndarray:
    frames = np.full((count, height, width, 3), 16, dtype=np.uint8)
    for i in range(count):
        x = square_x(i, step)
        frames[i, 20 : 20 + SQUARE, x : x + SQUARE] = 235
    return frames


def write_clip(
    path: Path,
    fps: Fraction | int,
    count: int,
    codec: str = "libx264",
    step: int = 2,
    size: tuple[int, int] = (48, 64),
    first_pts: int = 0,
) -> Path:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for i, rgb in enumerate(square_frames(count, *size, step)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = first_pts + i, 1 / Fraction(fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def square_centre(frame: torch.Tensor) -> float:
    """Column of the bright square's centre in one decoded RGB frame."""
    bright = frame[..., 0].float() > 128
    columns = torch.nonzero(bright.any(dim=0)).flatten().float()
    return float(columns.mean())


def tone(seconds: float, sample_rate: int, channels: int = 2, freq: float = 440.0, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(round(seconds * sample_rate), dtype=torch.float64) / sample_rate
    return (amp * torch.sin(2 * math.pi * freq * t)).to(torch.float32).repeat(channels, 1)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {
        "12fps": write_clip(folder / "square12.mp4", 12, 24),  # 2 s
        "ntsc": write_clip(folder / "ntsc.mp4", Fraction(30000, 1001), 30, step=1),  # 1.001 s
        "webm": write_clip(folder / "square12.webm", 12, 24, codec="libvpx-vp9"),
        "mkv": write_clip(folder / "ntsc.mkv", Fraction(30000, 1001), 30, step=1),
    }


def video_packets(path: Path) -> tuple[str, list[bytes], list[Fraction]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        payloads, times = [], []
        for packet in container.demux(stream):
            if packet.size:
                payloads.append(bytes(packet))
                times.append(packet.pts * packet.time_base if packet.pts is not None else None)
        return stream.codec_context.name, payloads, times


def decoded_audio(path: Path) -> tuple[np.ndarray, int, float, int]:
    """Samples [C, T], rate, start time and the largest decoded frame size (one "audio frame")."""
    with av.open(str(path)) as container:
        assert len(container.streams.audio) == 1
        stream = container.streams.audio[0]
        frames = list(container.decode(stream))
    planar = av.AudioResampler(format="fltp", layout=frames[0].layout.name, rate=frames[0].sample_rate)
    converted = [out for f in frames for out in planar.resample(f)] + planar.resample(None)
    samples = np.concatenate([f.to_ndarray() for f in converted], axis=1)  # float [C, T], -1..1
    return samples, frames[0].sample_rate, float(frames[0].time or 0.0), max(f.samples for f in frames)


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# --- probe and read -------------------------------------------------------------------------------------------


def test_probe_reports_exact_rate_count_duration(clips: dict[str, Path]) -> None:
    info = media.probe_video(clips["12fps"])
    assert info.fps == Fraction(12) and isinstance(info.fps, Fraction)
    assert info.frame_count == 24
    assert info.duration == pytest.approx(2.0, abs=1e-9)
    assert (info.width, info.height) == (64, 48)
    assert not info.has_audio
    assert info.codec == "h264"

    ntsc = media.probe_video(clips["ntsc"])
    assert ntsc.fps == Fraction(30000, 1001)
    assert ntsc.frame_count == 30
    assert ntsc.duration == pytest.approx(30 * 1001 / 30000, abs=1e-9)


@pytest.mark.parametrize("name", ["webm", "mkv"])
def test_probe_counts_frames_in_containers_without_a_frame_count(clips: dict[str, Path], name: str) -> None:
    info = media.probe_video(clips[name])
    expected_fps, expected_count = (Fraction(12), 24) if name == "webm" else (Fraction(30000, 1001), 30)
    assert info.frame_count == expected_count
    assert info.fps == expected_fps
    assert info.duration == pytest.approx(expected_count / expected_fps, abs=2e-3)  # 1 ms timestamps


@pytest.mark.parametrize(
    ("name", "fps", "count", "step"), [("12fps", Fraction(12), 24, 2), ("ntsc", Fraction(30000, 1001), 30, 1)]
)
def test_read_gives_every_frame_with_its_own_timestamp(
    clips: dict[str, Path], name: str, fps: Fraction, count: int, step: int
) -> None:
    video = media.read_video_frames(clips[name])
    assert video.frames.dtype == torch.uint8
    assert tuple(video.frames.shape) == (count, 48, 64, 3)
    assert video.fps == fps
    expected = [float(Fraction(i) / fps) for i in range(count)]
    assert video.timestamps.dtype == torch.float64
    assert video.timestamps.tolist() == expected  # exact: pts * time_base, no float accumulation
    assert [Fraction(int(p)) * video.time_base for p in video.pts] == [Fraction(i) / fps for i in range(count)]
    for i in range(count):  # frame i really is the i-th picture
        assert square_centre(video.frames[i]) == pytest.approx(square_x(i, step) + (SQUARE - 1) / 2, abs=1.0)


def test_iterator_yields_chunks_that_match_the_full_read(clips: dict[str, Path]) -> None:
    whole = media.read_video_frames(clips["12fps"])
    chunks = list(media.iter_video_frames(clips["12fps"], chunk_size=10))
    assert [c.frames.shape[0] for c in chunks] == [10, 10, 4]
    assert torch.equal(torch.cat([c.frames for c in chunks]), whole.frames)
    assert torch.equal(torch.cat([c.timestamps for c in chunks]), whole.timestamps)


def test_max_duration_keeps_frames_up_to_and_including_the_limit(clips: dict[str, Path]) -> None:
    video = media.read_video_frames(clips["12fps"], max_duration=1.0)
    assert video.frames.shape[0] == 13  # 0/12 .. 12/12 s
    assert video.timestamps[-1].item() == 1.0
    assert media.read_video_frames(clips["12fps"], max_duration=0.99).frames.shape[0] == 12
    with pytest.raises(InvalidInputError, match="max_duration"):
        media.read_video_frames(clips["12fps"], max_duration=0)


def test_in_memory_source_is_read_like_a_file(clips: dict[str, Path]) -> None:
    buffer = io.BytesIO(clips["12fps"].read_bytes())
    buffer.seek(100)  # readers rewind it themselves
    assert media.probe_video(buffer) == media.probe_video(clips["12fps"])
    assert torch.equal(media.read_video_frames(buffer).frames, media.read_video_frames(clips["12fps"]).frames)


# --- mux from a file: stream copy -----------------------------------------------------------------------------

CONTAINER_CODECS = [
    ("12fps", "mp4", "aac"),
    ("12fps", "mp4", "opus"),
    ("12fps", "mp4", "flac"),
    ("12fps", "mkv", "flac"),
    ("12fps", "mkv", "aac"),
    ("ntsc", "mkv", "opus"),
    ("webm", "webm", "opus"),
    ("mkv", "mp4", "aac"),
]


@pytest.mark.parametrize(("clip", "container", "codec"), CONTAINER_CODECS)
def test_mux_copies_video_packets_and_fits_audio_to_the_video(
    clips: dict[str, Path], tmp_path: Path, clip: str, container: str, codec: str
) -> None:
    source = clips[clip]
    out = tmp_path / f"out.{container}"
    written = media.mux_audio_into_video(source, tone(1.3, 44100), 44100, out, container=container, audio_codec=codec)
    assert written == [out]
    assert listing(tmp_path) == {out.name}

    src_codec, src_payloads, src_times = video_packets(source)
    out_codec, out_payloads, out_times = video_packets(out)
    assert out_codec == src_codec
    assert out_payloads == src_payloads  # byte-identical packets: copied, not re-encoded
    if container == "mp4" and source.suffix == ".mp4":
        assert out_times == src_times

    with av.open(str(out)) as handle:
        assert handle.streams.audio[0].codec_context.name in media.AUDIO_ENCODERS[codec]
    samples, rate, start, frame = decoded_audio(out)
    if codec == "opus":
        assert rate == 48000  # 44.1 kHz is no Opus rate: resampled
    video_duration = media.probe_video(out).duration
    assert abs(samples.shape[1] / rate - video_duration) <= frame / rate
    assert abs(start - media.probe_video(out).start_time) <= frame / rate
    assert samples.shape[0] == 2


@pytest.mark.parametrize("rate", [16000, 44100])
def test_opus_is_always_written_at_48k(clips: dict[str, Path], tmp_path: Path, rate: int) -> None:
    out = tmp_path / "opus.webm"
    media.mux_audio_into_video(clips["webm"], tone(2.0, rate, freq=1000.0), rate, out)
    with av.open(str(out)) as handle:
        assert handle.streams.audio[0].sample_rate == 48000
    samples, decoded_rate, _, frame = decoded_audio(out)
    assert decoded_rate == 48000 and abs(samples.shape[1] - 96000) <= frame
    # still a 1 kHz tone after resampling: over one second (1 Hz bins) the spectrum peaks at bin 1000
    spectrum = np.abs(np.fft.rfft(samples[0, 4800 : 4800 + 48000]))
    assert int(np.argmax(spectrum)) == pytest.approx(1000, abs=2)


def test_mux_pads_short_audio_with_silence(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "padded.mkv"
    media.mux_audio_into_video(clips["12fps"], tone(0.5, 16000, channels=1), 16000, out, audio_codec="flac")
    samples, rate, _, _ = decoded_audio(out)
    assert rate == 16000 and samples.shape == (1, 32000)  # FLAC is exact: 2 s of samples
    assert np.abs(samples[0, :8000]).max() > 0.4
    assert np.abs(samples[0, 8000:]).max() == 0.0


def test_mux_trims_long_audio(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "trimmed.mkv"
    audio = tone(5.0, 16000)
    media.mux_audio_into_video(clips["12fps"], audio[None], 16000, out)  # [1, C, T]; mkv -> FLAC by default
    samples, rate, _, _ = decoded_audio(out)
    assert rate == 16000 and samples.shape == (2, 32000)
    np.testing.assert_allclose(samples, audio[:, :32000].numpy(), atol=1.5 / 32768)


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_audio_starts_with_the_first_frame_of_a_late_starting_video(tmp_path: Path, container: str) -> None:
    source = write_clip(tmp_path / f"late.{container}", 12, 24, first_pts=18)  # first frame at 1.5 s
    info = media.probe_video(source)
    assert info.start_time == 1.5 and info.duration == pytest.approx(2.0, abs=1e-3)
    assert media.read_video_frames(source).timestamps[0].item() == 1.5
    out = tmp_path / f"out.{container}"
    media.mux_audio_into_video(source, tone(3.0, 16000), 16000, out, audio_codec="flac")
    samples, rate, start, _ = decoded_audio(out)
    assert start == pytest.approx(1.5, abs=1e-3)
    assert rate == 16000 and samples.shape[1] == 32000


def test_default_codec_follows_the_container(clips: dict[str, Path], tmp_path: Path) -> None:
    expected = {"mp4": "aac", "mkv": "flac", "webm": "opus"}
    for container, codec in expected.items():
        source = clips["webm"] if container == "webm" else clips["12fps"]
        out = tmp_path / f"default.{container}"
        media.mux_audio_into_video(source, tone(1.0, 44100), 44100, out)  # container from the extension
        with av.open(str(out)) as handle:
            assert handle.format.name.split(",")[0] in ("mov", "matroska")
            assert handle.streams.audio[0].codec_context.name in media.AUDIO_ENCODERS[codec]


def test_mux_replaces_existing_audio_and_accepts_in_memory_source(clips: dict[str, Path], tmp_path: Path) -> None:
    first = tmp_path / "first.mp4"
    media.mux_audio_into_video(clips["12fps"], tone(2.0, 44100), 44100, first)
    second = tmp_path / "second.mp4"
    media.mux_audio_into_video(io.BytesIO(first.read_bytes()), tone(2.0, 16000, channels=1), 16000, second)
    with av.open(str(second)) as handle:
        assert len(handle.streams.audio) == 1
        assert handle.streams.audio[0].sample_rate == 16000
        assert handle.streams.audio[0].channels == 1
    assert video_packets(second)[1] == video_packets(clips["12fps"])[1]


def test_mux_writes_metadata_tags(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "tagged.mp4"
    media.mux_audio_into_video(clips["12fps"], tone(1.0, 16000), 16000, out, metadata={"prompt": '{"1": {}}'})
    with av.open(str(out)) as handle:
        assert handle.metadata.get("prompt") == '{"1": {}}'


# --- mux from frames ------------------------------------------------------------------------------------------


def test_mux_from_float_frames_encodes_h264_at_the_exact_rate(tmp_path: Path) -> None:
    frames = torch.from_numpy(square_frames(30, 48, 64, 1)).float() / 255.0
    out = tmp_path / "frames.mp4"
    media.mux_audio_into_video(frames, tone(2.0, 44100), 44100, out, fps=30000 / 1001)
    assert listing(tmp_path) == {out.name}  # the intermediate file is gone
    info = media.probe_video(out)
    assert info.fps == Fraction(30000, 1001)
    assert info.frame_count == 30 and info.codec == "h264" and info.has_audio
    assert info.duration == pytest.approx(30 * 1001 / 30000, abs=1e-9)
    decoded = media.read_video_frames(out)
    for i in range(30):
        assert square_centre(decoded.frames[i]) == pytest.approx(square_x(i, 1) + (SQUARE - 1) / 2, abs=1.0)
    samples, rate, _, frame = decoded_audio(out)
    assert abs(samples.shape[1] / rate - info.duration) <= frame / rate


def test_mux_from_frames_to_webm_uses_vp9_and_opus(tmp_path: Path) -> None:
    frames = torch.from_numpy(square_frames(12, 48, 64, 2))  # uint8 frames
    out = tmp_path / "frames.webm"
    media.mux_audio_into_video(frames, tone(1.0, 16000, channels=1), 16000, out, fps=12)
    info = media.probe_video(out)
    assert info.codec == "vp9" and info.frame_count == 12 and info.fps == Fraction(12)
    samples, rate, _, frame = decoded_audio(out)
    assert abs(samples.shape[1] / rate - info.duration) <= frame / rate


def test_encode_frames_writes_a_silent_video_atomically(tmp_path: Path) -> None:
    out = media.encode_frames(
        torch.from_numpy(square_frames(6, 48, 64, 2)), Fraction(24000, 1001), tmp_path / "v.mkv", container="mkv"
    )
    info = media.probe_video(out)
    assert info.frame_count == 6 and not info.has_audio and info.fps == Fraction(24000, 1001)
    with pytest.raises(InvalidInputError, match="NaN"):
        media.encode_frames(torch.full((3, 16, 16, 3), float("nan")), 12, tmp_path / "bad.mp4")
    assert listing(tmp_path) == {"v.mkv"}


def test_odd_frame_sizes_are_padded_for_h264_and_alpha_is_dropped(tmp_path: Path) -> None:
    frames = torch.rand(5, 47, 63, 4)
    out = tmp_path / "odd.mp4"
    media.mux_audio_into_video(frames, tone(0.5, 16000), 16000, out, fps=10)
    info = media.probe_video(out)
    assert (info.width, info.height) == (64, 48)
    assert info.frame_count == 5


# --- batches --------------------------------------------------------------------------------------------------


def test_batch_gives_one_video_per_sample(clips: dict[str, Path], tmp_path: Path) -> None:
    batch = torch.stack([tone(2.0, 16000, amp=0.0), tone(2.0, 16000, amp=0.5)])
    written = media.mux_audio_into_video(clips["12fps"], batch, 16000, tmp_path / "sample_{index}.mkv")
    assert written == [tmp_path / "sample_0.mkv", tmp_path / "sample_1.mkv"]
    assert listing(tmp_path) == {"sample_0.mkv", "sample_1.mkv"}
    quiet, loud = (decoded_audio(p)[0] for p in written)
    assert np.abs(quiet).max() == 0.0 and np.abs(loud).max() > 0.4
    paths = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    assert media.mux_audio_into_video(clips["12fps"], batch, 16000, paths) == paths


def test_batch_needs_one_path_per_sample(clips: dict[str, Path], tmp_path: Path) -> None:
    batch = torch.zeros(2, 2, 1000)
    with pytest.raises(InvalidInputError, match="2 output paths"):
        media.mux_audio_into_video(clips["12fps"], batch, 16000, tmp_path / "one.mp4")
    with pytest.raises(InvalidInputError, match="2 output paths"):
        media.mux_audio_into_video(clips["12fps"], batch, 16000, [tmp_path / "one.mp4"])
    assert listing(tmp_path) == set()


def test_a_failure_late_in_a_batch_leaves_no_file(
    clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = muxing._write_with_audio
    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            args[1].write_bytes(b"half a file")
            raise InvalidInputError("simulated failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(muxing, "_write_with_audio", fail_on_second)
    with pytest.raises(InvalidInputError, match="simulated"):
        media.mux_audio_into_video(clips["12fps"], torch.zeros(3, 1, 1000), 16000, tmp_path / "s{index}.mp4")
    assert len(calls) == 2
    assert listing(tmp_path) == set()


# --- write_audio ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus", "ogg"])
def test_write_audio_formats(tmp_path: Path, fmt: str) -> None:
    audio = tone(1.0, 44100)
    path = media.write_audio(tmp_path / f"a.{fmt}", audio, 44100)
    assert listing(tmp_path) == {f"a.{fmt}"}
    samples, rate, _, frame = decoded_audio(path)
    assert samples.shape[0] == 2
    if fmt in ("wav", "flac"):
        assert rate == 44100
        np.testing.assert_allclose(samples, audio.numpy(), atol=1.5 / 32768)
    else:
        assert rate == (48000 if fmt in ("opus", "ogg") else 44100)
        # lossy codecs add encoder delay and frame padding: within two frames of the true length
        assert abs(samples.shape[1] / rate - 1.0) <= 2 * frame / rate


def test_write_audio_format_argument_and_errors(tmp_path: Path) -> None:
    media.write_audio(tmp_path / "noext", tone(0.2, 16000, channels=1)[None], 16000, format="flac")
    with av.open(str(tmp_path / "noext")) as handle:
        assert handle.streams.audio[0].codec_context.name == "flac"
    with pytest.raises(InvalidInputError, match=r"'.*x.xyz' does not end in an audio file extension.*\.wav.*\.ogg"):
        media.write_audio(tmp_path / "x.xyz", tone(0.2, 16000), 16000)
    with pytest.raises(InvalidInputError, match="unknown audio format 'aiff'"):
        media.write_audio(tmp_path / "x.wav", tone(0.2, 16000), 16000, format="aiff")
    with pytest.raises(InvalidInputError, match="batch of 2"):
        media.write_audio(tmp_path / "x.wav", torch.zeros(2, 1, 100), 16000)
    with pytest.raises(InvalidInputError, match="sample_rate"):
        media.write_audio(tmp_path / "x.wav", torch.zeros(1, 100), 0)
    assert listing(tmp_path) == {"noext"}


def test_ogg_is_opus_in_ogg(tmp_path: Path) -> None:
    path = media.write_audio(tmp_path / "a.ogg", tone(0.5, 16000, channels=1), 16000)
    with av.open(str(path)) as handle:
        assert handle.format.name == "ogg"
        assert handle.streams.audio[0].codec_context.name == "opus"


# --- staging: permissions, atomic replacement, nothing left behind ------------------------------------------------


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under this umask (process-wide; the tests run in one thread)."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_outputs_get_the_mode_of_a_new_file(clips: dict[str, Path], tmp_path: Path, umask: int) -> None:
    """0o644 under umask 0o022, as for any new file: not the 0o600 of a private temporary file."""
    expected = 0o666 & ~umask
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"")  # what the system gives a new file here (a default ACL would show in it too)
    assert _mode(plain) == expected
    audio = media.write_audio(tmp_path / "a.flac", tone(0.2, 16000), 16000)
    (video,) = media.mux_audio_into_video(clips["12fps"], tone(0.2, 16000), 16000, tmp_path / "v.mp4")
    frames = media.encode_frames(square_frames(3, 48, 64, 2), 12, tmp_path / "f.mkv", container="mkv")
    (from_frames,) = media.mux_audio_into_video(
        torch.from_numpy(square_frames(3, 48, 64, 2)), tone(0.2, 16000), 16000, tmp_path / "w.webm", fps=12
    )
    for path in (audio, video, frames, from_frames):
        assert _mode(path) == expected, path.name


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_a_replaced_output_gets_the_mode_of_a_new_file(tmp_path: Path, umask: int) -> None:
    old = tmp_path / "a.wav"
    old.write_bytes(b"old")
    old.chmod(0o600)
    media.write_audio(old, tone(0.2, 16000), 16000)
    assert _mode(old) == 0o666 & ~umask


def test_an_existing_output_is_replaced_whole_on_success(tmp_path: Path) -> None:
    old = tmp_path / "a.wav"
    old.write_bytes(b"old")
    media.write_audio(old, tone(0.2, 16000), 16000)
    assert listing(tmp_path) == {"a.wav"}
    samples, rate, _, _ = decoded_audio(old)
    assert rate == 16000 and samples.shape == (2, 3200)


@pytest.mark.parametrize("failure", [RuntimeError("encoder failed"), KeyboardInterrupt()])
def test_a_failed_audio_write_keeps_the_old_file_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    old = tmp_path / "a.flac"
    old.write_bytes(b"old")
    real = media.audio.encode_samples

    def fail_midway(track, samples, start_pts=0):
        real(track, samples[:, :100], start_pts)  # some packets made, the file begun
        raise failure

    monkeypatch.setattr(media.audio, "encode_samples", fail_midway)
    with pytest.raises(type(failure)):
        media.write_audio(old, tone(0.5, 16000), 16000)
    assert listing(tmp_path) == {"a.flac"}
    assert old.read_bytes() == b"old"


@pytest.mark.parametrize("failure", [InvalidInputError("simulated"), KeyboardInterrupt()])
def test_a_failed_mux_keeps_the_old_files_and_leaves_nothing(
    clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    for name in ("s0.mp4", "s1.mp4"):
        (tmp_path / name).write_bytes(b"old")
    real = muxing._write_with_audio
    calls: list[Path] = []

    def fail_on_second(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            args[1].write_bytes(b"half a file")
            raise failure
        return real(*args, **kwargs)

    monkeypatch.setattr(muxing, "_write_with_audio", fail_on_second)
    with pytest.raises(type(failure)):
        media.mux_audio_into_video(clips["12fps"], torch.zeros(2, 1, 1000), 16000, tmp_path / "s{index}.mp4")
    assert listing(tmp_path) == {"s0.mp4", "s1.mp4"}
    assert {(tmp_path / n).read_bytes() for n in ("s0.mp4", "s1.mp4")} == {b"old"}  # the first one too


def test_a_mux_never_writes_over_its_input(clips: dict[str, Path], tmp_path: Path) -> None:
    source = tmp_path / "same.mp4"
    source.write_bytes(clips["12fps"].read_bytes())
    spellings = [source, tmp_path / "sub" / ".." / "same.mp4"]
    if os.name == "posix":
        (tmp_path / "link.mp4").symlink_to(source)
        os.link(source, tmp_path / "hard.mp4")
        spellings += [tmp_path / "link.mp4", tmp_path / "hard.mp4"]
    for out in spellings:
        with pytest.raises(InvalidInputError, match="an output never replaces its input"):
            media.mux_audio_into_video(source, tone(0.5, 16000), 16000, out)
    assert source.read_bytes() == clips["12fps"].read_bytes()
    assert listing(tmp_path) <= {"same.mp4", "link.mp4", "hard.mp4"}


def test_a_folder_in_the_way_is_an_input_error_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.wav").mkdir()
    with pytest.raises(InvalidInputError, match=r"cannot put the finished file at '.*a.wav'"):
        media.write_audio(tmp_path / "a.wav", tone(0.2, 16000), 16000)
    assert listing(tmp_path) == {"a.wav"} and listing(tmp_path / "a.wav") == set()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc on this system")
def test_a_folder_that_takes_no_files_is_an_input_error() -> None:
    with pytest.raises(InvalidInputError, match=r"cannot write '/proc/a.wav': the folder '/proc' does not accept"):
        media.write_audio("/proc/a.wav", tone(0.2, 16000), 16000)


# --- bad input ------------------------------------------------------------------------------------------------


def _bad_sources(folder: Path) -> dict[str, tuple[object, str]]:
    (folder / "garbage.mp4").write_bytes(b"\x00\x01 this is not a video " * 100)
    audio_only = media.write_audio(folder / "audio_only.wav", torch.zeros(1, 1600), 16000)
    return {
        "missing": (folder / "does_not_exist.mp4", "cannot read"),
        "garbage": (folder / "garbage.mp4", "cannot read"),
        "truncated": (folder / "truncated.mp4", "cannot read"),
        "empty": (folder / "empty.mp4", "cannot read"),
        "audio only": (audio_only, "no video stream"),
        "in-memory garbage": (io.BytesIO(b"nothing to see"), "cannot read"),
    }


def test_unreadable_sources_raise_invalid_input(clips: dict[str, Path], tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    whole = clips["12fps"].read_bytes()
    (inputs / "truncated.mp4").write_bytes(whole[: len(whole) // 2])  # the index (moov) is lost
    (inputs / "empty.mp4").write_bytes(b"")
    for name, (source, message) in _bad_sources(inputs).items():
        with pytest.raises(InvalidInputError, match=message):
            media.probe_video(source)
        with pytest.raises(InvalidInputError, match=message):
            media.read_video_frames(source)
        with pytest.raises(InvalidInputError, match=message):
            media.mux_audio_into_video(source, tone(1.0, 16000), 16000, out / f"{name}.mp4")
    with pytest.raises(InvalidInputError, match="file path or a binary file"):
        media.probe_video(12345)
    assert listing(out) == set()


@pytest.mark.parametrize(
    ("waveform", "message"),
    [
        (torch.zeros(0, 1000), "0 channels"),
        (torch.zeros(3, 1000), "3 channels"),
        (torch.zeros(1, 5, 1000), "5 channels"),
        (torch.zeros(2, 0), "no samples"),
        (torch.zeros(1000), "shape"),
        (torch.full((2, 100), float("nan")), "NaN"),
        (torch.zeros(2, 100, dtype=torch.bool), "dtype"),
    ],
)
def test_bad_waveforms_raise_before_writing(
    clips: dict[str, Path], tmp_path: Path, waveform: torch.Tensor, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        media.mux_audio_into_video(clips["12fps"], waveform, 16000, tmp_path / "x.mp4")
    assert listing(tmp_path) == set()


@pytest.mark.parametrize("fps", [0, -12, float("nan"), float("inf"), None, "24", True])
def test_bad_fps_raises(tmp_path: Path, fps: object) -> None:
    with pytest.raises(InvalidInputError, match="fps"):
        media.mux_audio_into_video(torch.rand(4, 16, 16, 3), tone(0.5, 16000), 16000, tmp_path / "x.mp4", fps=fps)
    assert listing(tmp_path) == set()


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (torch.zeros(0, 16, 16, 3), "empty"),
        (torch.zeros(16, 16, 3), "shape"),
        (torch.zeros(4, 16, 16, 2), "channels"),
        (torch.full((4, 16, 16, 3), float("nan")), "NaN"),
        (torch.zeros(4, 16, 16, 3, dtype=torch.int64), "dtype"),
    ],
)
def test_bad_frames_raise_and_leave_nothing(tmp_path: Path, frames: torch.Tensor, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        media.mux_audio_into_video(frames, tone(0.5, 16000), 16000, tmp_path / "x.mp4", fps=12)
    assert listing(tmp_path) == set()


def test_codec_that_the_container_cannot_hold(clips: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot be copied into a webm"):
        media.mux_audio_into_video(clips["12fps"], tone(1.0, 16000), 16000, tmp_path / "x.webm")
    with pytest.raises(InvalidInputError, match="cannot hold 'aac'"):
        media.mux_audio_into_video(clips["webm"], tone(1.0, 16000), 16000, tmp_path / "x.webm", audio_codec="aac")
    with pytest.raises(InvalidInputError, match="unknown container"):
        media.mux_audio_into_video(clips["12fps"], tone(1.0, 16000), 16000, tmp_path / "x.avi", container="avi")
    with pytest.raises(InvalidInputError, match="fps applies to frames only"):
        media.mux_audio_into_video(clips["12fps"], tone(1.0, 16000), 16000, tmp_path / "x.mp4", fps=12)
    assert listing(tmp_path) == set()


def test_auto_container_for_a_codec_mp4_cannot_hold(tmp_path: Path) -> None:
    source = write_clip(tmp_path / "vp8.mkv", 12, 6, codec="libvpx")
    assert media.container_for_source(source) == "mkv"
    out = media.mux_audio_into_video(source, tone(0.5, 16000), 16000, tmp_path / "auto")  # no extension
    with av.open(str(out[0])) as handle:
        assert "matroska" in handle.format.name
        assert handle.streams.video[0].codec_context.name == "vp8"


def test_progress_reports_frames_and_files_and_can_abort(tmp_path: Path) -> None:
    frames = torch.from_numpy(square_frames(12, 48, 64, 2))
    reports: list[tuple[int, int]] = []
    media.mux_audio_into_video(
        frames,
        torch.zeros(2, 1, 800),
        16000,
        tmp_path / "p{index}.mp4",
        fps=12,
        progress=lambda done, total: reports.append((done, total)),
    )
    assert reports[-1] == (14, 14)  # 12 frames encoded + 2 files written
    assert [d for d, _ in reports] == sorted(d for d, _ in reports)

    class CancelledError(Exception):
        pass

    def cancel(done: int, total: int) -> None:
        if done >= 5:
            raise CancelledError

    folder = tmp_path / "cancelled"
    with pytest.raises(CancelledError):
        media.mux_audio_into_video(frames, torch.zeros(1, 800), 16000, folder / "c.mp4", fps=12, progress=cancel)
    assert listing(folder) == set()
