"""The mux node through the ComfyUI stand-in: schema, VIDEO (file or in-memory) and IMAGE sources, save/preview.

The node module is imported the way ComfyUI imports the pack (a package with its own name, relative imports),
against ``tests/comfy_stub``. What that stub does not provide yet (``InputImpl.VideoFromFile`` and the output,
temp and save-path helpers of ``folder_paths``) is filled in here with minimal ComfyUI-shaped stand-ins.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import io as pyio
import json
import os
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import ModuleType, SimpleNamespace

import av
import numpy as np
import pytest
import torch

from mmaudio import media

from . import comfy_stub
from .test_media import decoded_audio, listing, square_frames, tone, video_packets, write_clip

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK = "mmaudio_sync_mux_under_test"


class StandInVideoFromFile:
    """ComfyUI's VideoFromFile as far as the node uses it: a path or BytesIO behind a VIDEO."""

    def __init__(self, file: str | pyio.BytesIO) -> None:
        self.file = file

    def get_stream_source(self) -> str | pyio.BytesIO:
        if isinstance(self.file, pyio.BytesIO):
            self.file.seek(0)
        return self.file


def stand_in_save_image_path(filename_prefix: str, output_dir: str, image_width: int = 0, image_height: int = 0):
    """ComfyUI's folder_paths.get_save_image_path: subfolder from the prefix, counter after existing files."""
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    folder = os.path.join(output_dir, subfolder)
    os.makedirs(folder, exist_ok=True)
    counters = [0]
    for existing in os.listdir(folder):
        head, _, rest = existing.partition(filename + "_")
        if head == "" and rest[:5].isdigit():
            counters.append(int(rest[:5]))
    return folder, filename, max(counters) + 1, subfolder, filename_prefix


@pytest.fixture
def dirs(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(output=tmp_path / "output", temp=tmp_path / "temp", inputs=tmp_path / "input")


@pytest.fixture
def mux(dirs: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``nodes.mux`` imported as part of a package, with the ComfyUI stand-in installed."""
    for folder in vars(dirs).values():
        folder.mkdir()
    uninstall = comfy_stub.install()
    try:
        latest = sys.modules["comfy_api.latest"]
        if not hasattr(latest.InputImpl, "VideoFromFile"):
            monkeypatch.setattr(latest.InputImpl, "VideoFromFile", StandInVideoFromFile, raising=False)
        paths = sys.modules["folder_paths"]
        monkeypatch.setattr(paths, "get_output_directory", lambda: str(dirs.output), raising=False)
        monkeypatch.setattr(paths, "get_temp_directory", lambda: str(dirs.temp), raising=False)
        if not hasattr(paths, "get_save_image_path"):
            monkeypatch.setattr(paths, "get_save_image_path", stand_in_save_image_path, raising=False)
        spec = importlib.machinery.ModuleSpec(PACK, None, is_package=True)
        package = importlib.util.module_from_spec(spec)
        package.__path__ = [str(REPO_ROOT)]
        sys.modules[PACK] = package
        try:
            yield importlib.import_module(f"{PACK}.nodes.mux")
        finally:
            for name in [n for n in sys.modules if n == PACK or n.startswith(PACK + ".")]:
                del sys.modules[name]
    finally:
        uninstall()


def run(mux: ModuleType, prompt: dict | None = None, **inputs):
    node = mux.MuxVideo.PREPARE_CLASS_CLONE({"PROMPT": prompt} if prompt is not None else {})
    return node.execute(**inputs)


def audio_input(waveform: torch.Tensor, sample_rate: int) -> dict:
    return {"waveform": waveform, "sample_rate": sample_rate}


@pytest.fixture
def clip(dirs: SimpleNamespace) -> Path:
    return write_clip(dirs.inputs / "square.mp4", 12, 24)


def test_schema_is_complete(mux: ModuleType) -> None:
    listed = list(mux.MUX_NODES)
    assert listed == [mux.MuxVideo]
    schema = mux.MuxVideo.GET_SCHEMA()
    assert schema.node_id.startswith("MMAudioSync")
    assert schema.category == "audio/MMAudio"
    assert schema.description
    assert schema.is_output_node
    assert all(i.tooltip for i in schema.inputs), [i.id for i in schema.inputs if not i.tooltip]
    assert all(o.tooltip for o in schema.outputs)
    by_id = {i.id: i for i in schema.inputs}
    assert not by_id["audio"].optional
    assert by_id["video"].optional and by_id["images"].optional and by_id["fps"].optional
    assert by_id["container"].options == ["auto", "mp4", "mkv", "webm"]
    assert by_id["audio_codec"].options == ["auto", "aac", "flac", "opus"]
    assert [o.io_type for o in schema.outputs] == ["VIDEO"]


def test_file_video_is_copied_and_saved_with_preview(mux: ModuleType, dirs: SimpleNamespace, clip: Path) -> None:
    prompt = {"1": {"class_type": "MMAudioSyncMuxVideo"}}
    result = run(
        mux,
        prompt=prompt,
        audio=audio_input(tone(1.0, 44100)[None], 44100),
        video=StandInVideoFromFile(str(clip)),
        filename_prefix="MMAudio/test",
    )
    saved = dirs.output / "MMAudio" / "test_00001_.mp4"
    assert listing(dirs.output / "MMAudio") == {saved.name}
    assert result.ui.as_dict() == {
        "images": [{"filename": saved.name, "subfolder": "MMAudio", "type": "output"}],
        "animated": (True,),
    }
    video = result.args[0]
    assert Path(video.get_stream_source()) == saved
    assert video_packets(saved)[1] == video_packets(clip)[1]  # stream copy
    samples, rate, _, frame = decoded_audio(saved)
    assert rate == 44100 and abs(samples.shape[1] / rate - 2.0) <= frame / rate  # padded to the clip's 2 s
    with av.open(str(saved)) as handle:
        assert json.loads(handle.metadata["prompt"]) == prompt


def test_in_memory_video_and_preview_only(mux: ModuleType, dirs: SimpleNamespace, clip: Path) -> None:
    video = StandInVideoFromFile(pyio.BytesIO(clip.read_bytes()))
    result = run(
        mux,
        audio=audio_input(tone(3.0, 16000, channels=1)[None], 16000),
        video=video,
        save_output=False,
        container="mkv",
    )
    assert listing(dirs.output) == set()
    [entry] = result.ui.as_dict()["images"]
    assert entry["type"] == "temp" and entry["filename"].endswith(".mkv")
    written = dirs.temp / entry["subfolder"] / entry["filename"]
    assert written.exists()
    assert video_packets(written)[1] == video_packets(clip)[1]
    samples, rate, _, _ = decoded_audio(written)
    assert rate == 16000 and samples.shape == (1, 32000)  # FLAC in mkv, trimmed to 2 s


def test_images_with_fps_are_encoded(mux: ModuleType, dirs: SimpleNamespace) -> None:
    images = torch.from_numpy(square_frames(15, 48, 64, 2)).float() / 255
    result = run(
        mux, audio=audio_input(tone(0.5, 44100)[None], 44100), images=images, fps=30000 / 1001, container="webm"
    )
    [entry] = result.ui.as_dict()["images"]
    written = dirs.output / entry["subfolder"] / entry["filename"]
    assert written.suffix == ".webm"
    info = media.probe_video(written)
    assert info.codec == "vp9" and info.frame_count == 15 and info.fps == Fraction(30000, 1001)
    assert decoded_audio(written)[1] == 48000  # Opus


def test_components_video_is_encoded_from_its_frames(mux: ModuleType, dirs: SimpleNamespace) -> None:
    latest = sys.modules["comfy_api.latest"]
    images = torch.from_numpy(square_frames(10, 48, 64, 2)).float() / 255
    video = latest.InputImpl.VideoFromComponents(latest.Types.VideoComponents(images=images, frame_rate=Fraction(25)))
    result = run(mux, audio=audio_input(tone(0.4, 16000)[None], 16000), video=video)
    written = Path(result.args[0].get_stream_source())
    info = media.probe_video(written)
    assert info.frame_count == 10 and info.fps == Fraction(25) and info.codec == "h264"


def test_batch_writes_every_sample_and_outputs_the_first(mux: ModuleType, dirs: SimpleNamespace, clip: Path) -> None:
    batch = torch.stack([tone(2.0, 16000, amp=0.5), tone(2.0, 16000, amp=0.0)])
    first = run(mux, audio=audio_input(batch, 16000), video=StandInVideoFromFile(str(clip)), container="mkv")
    names = [e["filename"] for e in first.ui.as_dict()["images"]]
    assert names == ["video_00001_.mkv", "video_00002_.mkv"]
    assert Path(first.args[0].get_stream_source()).name == names[0]
    loud, quiet = (decoded_audio(dirs.output / "MMAudio" / n)[0] for n in names)
    assert np.abs(loud).max() > 0.4 and np.abs(quiet).max() == 0.0
    again = run(mux, audio=audio_input(batch[:1], 16000), video=StandInVideoFromFile(str(clip)), container="mkv")
    assert [e["filename"] for e in again.ui.as_dict()["images"]] == ["video_00003_.mkv"]  # never overwrites


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"audio": None}, "audio is empty"),
        ({"audio": {"samples": 1}}, "waveform"),
        ({}, "connect a video"),
        ({"images": torch.rand(3, 16, 16, 3), "video": "x"}, "not both"),
        ({"images": torch.rand(3, 16, 16, 3), "fps": 0.0}, "fps"),
        ({"images": torch.rand(0, 16, 16, 3)}, "empty"),
        ({"images": torch.rand(16, 16, 3)}, "shape"),
    ],
)
def test_bad_inputs_raise_and_write_nothing(mux: ModuleType, dirs: SimpleNamespace, inputs: dict, message: str) -> None:
    inputs.setdefault("audio", audio_input(tone(0.5, 16000)[None], 16000))
    with pytest.raises(mux.InvalidInputError, match=message):
        run(mux, **inputs)
    assert not any(p.is_file() for p in dirs.output.rglob("*"))


def test_bad_audio_and_incompatible_container_leave_nothing(mux: ModuleType, dirs: SimpleNamespace, clip: Path) -> None:
    video = StandInVideoFromFile(str(clip))
    with pytest.raises(mux.InvalidInputError, match="3 channels"):
        run(mux, audio=audio_input(torch.zeros(1, 3, 1000), 16000), video=video)
    with pytest.raises(mux.InvalidInputError, match="webm"):
        run(mux, audio=audio_input(tone(0.5, 16000)[None], 16000), video=video, container="webm")
    assert not any(p.is_file() for p in dirs.output.rglob("*"))


def test_cancel_interrupts_encoding_and_leaves_nothing(mux: ModuleType, dirs: SimpleNamespace) -> None:
    management = sys.modules["comfy.model_management"]
    management.interrupt_current_processing(True)
    try:
        with pytest.raises(management.InterruptProcessingException):
            run(mux, audio=audio_input(tone(0.5, 16000)[None], 16000), images=torch.rand(6, 16, 16, 3), fps=12.0)
    finally:
        management.interrupt_current_processing(False)
    assert not any(p.is_file() for p in dirs.output.rglob("*"))


def test_trimmed_file_video_is_encoded_from_its_trimmed_frames(
    mux: ModuleType, dirs: SimpleNamespace, clip: Path
) -> None:
    """Newer ComfyUI hands out trimmed views of a file; copying the file would ignore the trim."""
    latest = sys.modules["comfy_api.latest"]
    video_type = latest.InputImpl.VideoFromFile

    class TrimmedVideo(video_type):
        def get_active_trim_window(self) -> tuple[float, float]:
            return 0.5, 1.0

        def get_components(self):
            frames = media.read_video_frames(clip).frames[6:18].float() / 255  # 0.5 s .. 1.5 s at 12 fps
            return latest.Types.VideoComponents(images=frames, frame_rate=Fraction(12))

    result = run(mux, audio=audio_input(tone(2.0, 16000)[None], 16000), video=TrimmedVideo(str(clip)))
    info = media.probe_video(Path(result.args[0].get_stream_source()))
    assert info.frame_count == 12 and info.duration == pytest.approx(1.0, abs=1e-6)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("save_output", [True, False])
def test_saved_and_preview_files_get_the_mode_of_a_new_file(
    mux: ModuleType, dirs: SimpleNamespace, clip: Path, save_output: bool
) -> None:
    """Under umask 0o022 a saved video is 0o644 like any file ComfyUI writes, not a private 0o600 temp file."""
    previous = os.umask(0o022)
    try:
        result = run(mux, audio=audio_input(tone(0.5, 16000)[None], 16000), video=StandInVideoFromFile(str(clip)),
                     save_output=save_output)
    finally:
        os.umask(previous)
    written = Path(result.args[0].get_stream_source())
    assert written.parent.is_relative_to(dirs.output if save_output else dirs.temp)
    assert written.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in written.parent.iterdir()] == [written.name]  # no temporary file left beside it
