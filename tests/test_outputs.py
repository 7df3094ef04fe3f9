"""mmaudio.media.outputs: output paths checked before a run, against the real file system and PyAV.

Where the answer depends on who runs the tests (root may write into a mode 0o555 folder), a test asks the system
what it allows and checks that the preflight says the same; nothing here assumes one user or one machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from mmaudio import media
from mmaudio.errors import InvalidInputError
from mmaudio.media import outputs

from .test_media import listing, write_clip

HAS_PROC = Path("/proc/self").is_dir()
POSIX = os.name == "posix"


@pytest.fixture(scope="module")
def h264_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("h264") / "clip.mp4", 12, 6)


def _system_allows_new_file(folder: Path) -> bool:
    """Whether this process may create a file in ``folder``: try it."""
    probe = folder / "probe-by-the-test"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    probe.unlink()
    return True


# --- formats ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.wav", "wav"), ("a.flac", "flac"), ("a.mp3", "mp3"), ("a.opus", "opus"), ("a.ogg", "ogg"), ("A.WAV", "wav")],
)
def test_audio_formats_by_extension(name: str, expected: str) -> None:
    assert outputs.audio_format_for(name, "--audio-out") == expected
    assert expected in media.AUDIO_FILE_FORMATS  # write_audio takes every format the check lets through


@pytest.mark.parametrize("name", ["a.xyz", "a", "a.mp4", "a.flac.part"])
def test_other_names_are_no_audio_file(name: str) -> None:
    with pytest.raises(InvalidInputError, match=r"^--audio-out '.*': not an audio file name.*\.wav.*\.ogg"):
        outputs.audio_format_for(name, "--audio-out")


@pytest.mark.parametrize(
    ("name", "expected"), [("v.mp4", "mp4"), ("v.mkv", "mkv"), ("v.webm", "webm"), ("v.MOV", "mov"), ("v.m4v", "mp4")]
)
def test_video_containers_by_extension(name: str, expected: str) -> None:
    assert outputs.video_container_for(name, "--out") == expected
    assert expected in media.CONTAINERS


def test_other_names_are_no_video_file() -> None:
    with pytest.raises(InvalidInputError, match=r"^--out 'v.avi': not a video file name.*\.mp4.*\.webm"):
        outputs.video_container_for("v.avi", "--out")


# --- the path itself ----------------------------------------------------------------------------------------------


def test_a_new_file_in_a_writable_folder_passes_and_leaves_nothing(tmp_path: Path) -> None:
    assert outputs.check_output_path(tmp_path / "new.wav", "--out") == tmp_path / "new.wav"
    assert listing(tmp_path) == set()  # the write probe is removed


def test_an_existing_file_passes_and_is_untouched(tmp_path: Path) -> None:
    existing = tmp_path / "old.wav"
    existing.write_bytes(b"old")
    outputs.check_output_path(existing, "--out")
    assert existing.read_bytes() == b"old"
    assert listing(tmp_path) == {"old.wav"}


def test_an_existing_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out.mp4").mkdir()
    with pytest.raises(InvalidInputError, match=r"^--out '.*out.mp4' is a folder"):
        outputs.check_output_path(tmp_path / "out.mp4", "--out")


def test_a_missing_folder_is_named_or_may_be_created(tmp_path: Path) -> None:
    target = tmp_path / "not" / "yet" / "a.wav"
    with pytest.raises(InvalidInputError, match=r"the folder '.*yet' does not exist"):
        outputs.check_output_path(target, "--audio-out")
    outputs.check_output_path(target, "--audio-out", create_parents=True)
    assert listing(tmp_path) == set()  # checked, not created


def test_a_file_used_as_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plain").write_bytes(b"")
    with pytest.raises(InvalidInputError, match="is not a folder"):
        outputs.check_output_path(tmp_path / "plain" / "a.wav", "--out", create_parents=True)
    with pytest.raises(InvalidInputError, match="is not a folder"):
        outputs.check_output_path(tmp_path / "plain" / "a.wav", "--out")


@pytest.mark.skipif(not HAS_PROC, reason="no /proc on this system")
def test_proc_is_refused_with_a_message() -> None:
    with pytest.raises(InvalidInputError, match=r"^--out '/proc/a.wav': .*(not writable|does not allow)"):
        outputs.check_output_path("/proc/a.wav", "--out")


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null on this system")
def test_a_device_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="not a regular file"):
        outputs.check_output_path("/dev/null", "--out")


def test_a_name_too_long_for_the_file_system_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="longer than its file system allows"):
        outputs.check_output_path(tmp_path / ("n" * 300 + ".wav"), "--out")


@pytest.mark.skipif(not POSIX, reason="POSIX permission bits")
def test_a_read_only_folder_is_refused_when_the_system_refuses_it(tmp_path: Path) -> None:
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        allowed = _system_allows_new_file(folder)  # False for a normal user; root may write anyway
        if allowed:
            outputs.check_output_path(folder / "a.wav", "--out")
        else:
            with pytest.raises(InvalidInputError, match=r"not writable|does not allow"):
                outputs.check_output_path(folder / "a.wav", "--out")
        assert listing(folder) == set()
    finally:
        folder.chmod(0o755)


@pytest.mark.skipif(not POSIX, reason="POSIX permission bits")
def test_a_read_only_file_is_refused_when_the_system_refuses_writing_it(tmp_path: Path) -> None:
    existing = tmp_path / "keep.wav"
    existing.write_bytes(b"keep")
    existing.chmod(0o444)
    try:
        writable = os.access(existing, os.W_OK)
        if writable:
            outputs.check_output_path(existing, "--out")
        else:
            with pytest.raises(InvalidInputError, match="read-only"):
                outputs.check_output_path(existing, "--out")
    finally:
        existing.chmod(0o644)


# --- outputs and inputs -------------------------------------------------------------------------------------------


def test_the_input_itself_is_refused_under_any_spelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "same.mp4"
    source.write_bytes(b"precious")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    for spelling in ["same.mp4", str(source), "sub/../same.mp4", "./same.mp4"]:
        with pytest.raises(InvalidInputError, match=r"^--out '.*' is the same file as the input --video"):
            outputs.check_not_an_input(spelling, "--out", {"--video": source})
    assert source.read_bytes() == b"precious"


@pytest.mark.skipif(not POSIX, reason="links as POSIX makes them")
def test_links_to_the_input_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "in.mp4"
    source.write_bytes(b"precious")
    (tmp_path / "soft.mp4").symlink_to(source)
    os.link(source, tmp_path / "hard.mp4")
    for name in ("soft.mp4", "hard.mp4"):
        assert outputs.same_file(tmp_path / name, source)
        with pytest.raises(InvalidInputError, match="same file as the input"):
            outputs.check_not_an_input(tmp_path / name, "--out", {"--video": source})


def test_other_files_are_not_the_input(tmp_path: Path) -> None:
    source = tmp_path / "in.mp4"
    source.write_bytes(b"a")
    (tmp_path / "other.mp4").write_bytes(b"a")
    assert not outputs.same_file(tmp_path / "other.mp4", source)  # equal bytes, different files
    assert not outputs.same_file(tmp_path / "new.mp4", source)  # not there yet
    outputs.check_not_an_input(tmp_path / "new.mp4", "--out", {"--video": source})


def test_outputs_of_one_run_must_differ(tmp_path: Path) -> None:
    video = tmp_path / "in.mp4"
    video.write_bytes(b"a")
    with pytest.raises(InvalidInputError, match=r"--out '.*a.mp4' and --audio-out '.*a.mp4' are the same file"):
        outputs.check_distinct_outputs([("--out", tmp_path / "a.mp4"), ("--audio-out", tmp_path / "a.mp4")],
                                       {"--video": video})
    outputs.check_distinct_outputs([("--out", tmp_path / "a.mp4"), ("--audio-out", tmp_path / "a.flac")],
                                   {"--video": video})


def test_numbered_outputs_are_checked_against_the_input(tmp_path: Path) -> None:
    video = tmp_path / "clip_01.mp4"
    video.write_bytes(b"a")
    numbered = outputs.numbered_paths(tmp_path / "clip.mp4", 3)
    assert [p.name for p in numbered] == ["clip_00.mp4", "clip_01.mp4", "clip_02.mp4"]
    assert outputs.numbered_paths(tmp_path / "clip.mp4", 1) == [tmp_path / "clip.mp4"]
    with pytest.raises(InvalidInputError, match=r"^--out '.*clip_01.mp4' is the same file as the input --video"):
        outputs.check_distinct_outputs([("--out", p) for p in numbered], {"--video": video})


# --- stream copy --------------------------------------------------------------------------------------------------


def test_h264_cannot_go_into_webm_and_the_message_says_where_it_can(h264_clip: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"^--out '.*x.webm': the h264 video .* use \.mp4, \.mkv or \.mov$"):
        outputs.check_stream_copy(h264_clip, "webm", "--out", tmp_path / "x.webm")
    for container in ("mp4", "mkv", "mov"):
        outputs.check_stream_copy(h264_clip, container, "--out")
    assert media.containers_for_video("h264") == ["mp4", "mkv", "mov"]


def test_vp9_goes_into_webm(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.webm", 12, 6, codec="libvpx-vp9")
    outputs.check_stream_copy(clip, "webm", "--out")
    assert outputs.check_video_output(tmp_path / "out.webm", "--out", clip, inputs={"--video": clip}) == "webm"


def test_prores_cannot_go_into_mp4(tmp_path: Path) -> None:
    try:
        av.Codec("prores_ks", "w")
    except (ValueError, av.FFmpegError):
        pytest.skip("this PyAV has no ProRes encoder to make the test clip")
    clip = tmp_path / "clip.mov"
    with av.open(str(clip), mode="w") as container:
        stream = container.add_stream("prores_ks", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv422p10le"
        for index in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * index, dtype=np.uint8), format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(InvalidInputError, match=r"prores video .* use \.mkv or \.mov$"):
        outputs.check_video_output(tmp_path / "out.mp4", "--out", clip)
    assert outputs.check_video_output(tmp_path / "out.mov", "--out", clip) == "mov"


# --- the checks together ------------------------------------------------------------------------------------------


def test_video_output_checks_in_one_call(h264_clip: Path, tmp_path: Path) -> None:
    inputs = {"--video": h264_clip}
    assert outputs.check_video_output(tmp_path / "out.mp4", "--out", h264_clip, inputs=inputs) == "mp4"
    with pytest.raises(InvalidInputError, match="same file as the input"):
        outputs.check_video_output(h264_clip, "--out", h264_clip, inputs=inputs)
    with pytest.raises(InvalidInputError, match="cannot be copied into a webm"):
        outputs.check_video_output(tmp_path / "out.webm", "--out", h264_clip, inputs=inputs)
    with pytest.raises(InvalidInputError, match="not a video file name"):
        outputs.check_video_output(tmp_path / "out.ogg", "--out", h264_clip, inputs=inputs)
    assert listing(tmp_path) == set()


def test_audio_output_checks_in_one_call(tmp_path: Path) -> None:
    assert outputs.check_audio_output(tmp_path / "a.ogg", "--audio-out") == "ogg"
    with pytest.raises(InvalidInputError, match=r"^--audio-out '.*a.mp4': not an audio file name"):
        outputs.check_audio_output(tmp_path / "a.mp4", "--audio-out")
    (tmp_path / "taken.wav").mkdir()
    with pytest.raises(InvalidInputError, match=r"^--audio-out '.*taken.wav' is a folder"):
        outputs.check_audio_output(tmp_path / "taken.wav", "--audio-out")


def test_what_the_checks_pass_can_be_written(h264_clip: Path, tmp_path: Path) -> None:
    """Every extension the checks accept is one the writers write (no "pass format=" after a long run)."""
    for suffix in outputs.AUDIO_SUFFIXES:
        path = tmp_path / f"a{suffix}"
        fmt = outputs.check_audio_output(path, "--out")
        media.write_audio(path, torch.zeros(1, 1600), 16000)
        assert fmt in media.AUDIO_FILE_FORMATS and path.is_file()
    vp9_clip = write_clip(tmp_path / "clip.webm", 12, 6, codec="libvpx-vp9")
    for suffix, container in outputs.VIDEO_SUFFIXES.items():
        path = tmp_path / f"v{suffix}"
        source = vp9_clip if container == "webm" else h264_clip
        outputs.check_video_output(path, "--out", source)
        assert media.mux_audio_into_video(source, torch.zeros(1, 8000), 16000, path) == [path]
        with av.open(str(path)) as written:
            assert [s.type for s in written.streams] == ["video", "audio"]
