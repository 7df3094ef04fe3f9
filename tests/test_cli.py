"""The headless command runs the library stages end to end on small random-weight files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch

from mmaudio.cli import main
from mmaudio.features.frames import plan_frames

from .comfy_stub import tiny_weights
from .video_factory import write_moving_bar_video

FPS = 12
SECONDS = 1.5


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("weights")
    names = tiny_weights.write_models(folder, allow_full_clip=False)
    assert names.tiny_clip, "the library must load a small CLIP for this test"
    return {kind: folder / getattr(names, kind) for kind in ("network", "vae", "vocoder", "clip", "synchformer")}


def _component_args(models: dict[str, Path]) -> list[str]:
    args = []
    for kind, path in models.items():
        args += [f"--{kind}", str(path)]
    return [*args, "--no-download", "--steps", "2", "--device", "cpu", "--quiet"]


def _write_video(path: Path) -> None:
    write_moving_bar_video(path, frames=int(FPS * SECONDS), fps=FPS)


def _streams(path: Path) -> dict[str, float]:
    with av.open(str(path)) as container:
        out = {}
        for stream in container.streams:
            duration = float(stream.duration * stream.time_base) if stream.duration else float(
                container.duration / av.time_base)
            out[stream.type] = duration
        return out


def test_video_to_audio_writes_a_muxed_video_and_the_audio(models, tmp_path, capsys) -> None:
    video = tmp_path / "in.mp4"
    _write_video(video)
    out = tmp_path / "out.mp4"
    code = main(["generate", "--video", str(video), "--prompt", "footsteps", "--out", str(out),
                 *_component_args(models)])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out.split()
    assert str(out) in printed and str(out.with_suffix(".flac")) in printed
    streams = _streams(out)
    assert set(streams) == {"video", "audio"}
    assert abs(streams["audio"] - streams["video"]) < 0.05
    with av.open(str(out.with_suffix(".flac"))) as audio:
        stream = audio.streams.audio[0]
        assert stream.rate == 16000  # the tiny network is a 16 kHz model
        samples = sum(frame.samples for frame in audio.decode(stream))
    # The reference cuts the duration to the frames it can sample at 25 fps (36 slots here: 1.44 s).
    expected = plan_frames(int(FPS * SECONDS), FPS).duration
    assert 1.4 < expected <= SECONDS
    assert samples == round(expected * 16000)


def test_text_to_audio_writes_an_audio_file_of_the_requested_length(models, tmp_path, capsys) -> None:
    out = tmp_path / "rain.wav"
    code = main(["generate", "--prompt", "rain on a tin roof", "--duration", "1.0", "--samples", "2", "--out",
                 str(out), *_component_args(models)])
    assert code == 0, capsys.readouterr().err
    written = sorted(tmp_path.glob("rain_*.wav"))
    assert [p.name for p in written] == ["rain_00.wav", "rain_01.wav"]
    with av.open(str(written[0])) as audio:
        stream = audio.streams.audio[0]
        frames = [f.to_ndarray() for f in audio.decode(stream)]
    assert sum(f.shape[-1] for f in frames) == 16000
    assert Fraction(stream.rate) == 16000


def test_bad_video_is_a_clear_error_and_leaves_no_output(models, tmp_path, capsys) -> None:
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_bytes(b"this is not a video")
    out = tmp_path / "out.mp4"
    code = main(["generate", "--video", str(not_a_video), "--out", str(out), *_component_args(models)])
    assert code == 2
    assert "notes.mp4" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.mp4"]


def test_missing_weights_without_download_name_the_file(tmp_path, capsys) -> None:
    code = main(["generate", "--prompt", "wind", "--duration", "1", "--out", str(tmp_path / "a.wav"),
                 "--weights", str(tmp_path / "empty"), "--no-download", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "mmaudio_large_44k_v2" in err and str(tmp_path / "empty") in err


def _request(prompt: str = "rain", duration: float = 1.0, steps: int = 2):
    from mmaudio.engine import GenerationRequest, SamplingSettings

    return GenerationRequest(prompt=prompt, duration=duration, sampling=SamplingSettings(seed=42, steps=steps))


def test_offload_moves_each_stage_and_gives_the_same_audio(models, monkeypatch) -> None:
    """On a CPU the moves change nothing, so the test records which models each stage moves, and in what order."""
    from mmaudio import engine

    files = engine.ComponentFiles(**models)
    plain_models = engine.load_models(files, device="cpu")
    plain = engine.generate(plain_models, None, _request(), engine.DirectRuntime("cpu"))
    staged = engine.load_models(files, device="cpu", offload=True)
    names = {id(staged.features.clip.module): "clip", id(staged.features.synchformer.module): "synchformer",
             id(staged.network.module): "network", id(staged.decoder.module): "decoder"}
    moves: list[tuple[str, str]] = []
    real_to = torch.nn.Module.to

    def recording_to(module, *args, **kwargs):
        if id(module) in names:
            moves.append((names[id(module)], str(args[0] if args else kwargs.get("device"))))
        return real_to(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", recording_to)
    result = engine.generate(staged, None, _request(), engine.DirectRuntime("cpu", offload=True))
    # Text-to-audio: CLIP for the text, then the network, then the decoder; each there for its stage only.
    assert moves == [("clip", "cpu"), ("clip", "cpu"), ("network", "cpu"), ("network", "cpu"),
                     ("decoder", "cpu"), ("decoder", "cpu")]
    assert torch.equal(result.waveform, plain.waveform)


def test_offload_returns_the_models_after_an_error(models, monkeypatch) -> None:
    from mmaudio import engine

    staged = engine.load_models(engine.ComponentFiles(**models), device="cpu", offload=True)
    returned: list[str] = []
    real_to = torch.nn.Module.to

    def recording_to(module, *args, **kwargs):
        if module is staged.network.module:
            returned.append(str(args[0] if args else kwargs.get("device")))
        return real_to(module, *args, **kwargs)

    def failing_sampler(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(torch.nn.Module, "to", recording_to)
    monkeypatch.setattr("mmaudio.engine.sampling.sample", failing_sampler)
    with pytest.raises(RuntimeError, match="out of memory"):
        engine.generate(staged, None, _request(), engine.DirectRuntime("cpu", offload=True))
    assert returned == ["cpu", "cpu"]  # moved for the stage, then back despite the error


def _with_soundtrack(tmp_path: Path) -> Path:
    from mmaudio import media

    video = tmp_path / "silent.mp4"
    _write_video(video)
    tone = torch.sin(torch.arange(int(48000 * SECONDS)) / 48000 * 2 * torch.pi * 330).unsqueeze(0) * 0.3
    return media.mux_audio_into_video(video, tone, 48000, tmp_path / "with_sound.mp4")[0]


def test_regenerating_a_second_of_a_videos_soundtrack(models, tmp_path, capsys) -> None:
    source = _with_soundtrack(tmp_path)
    out = tmp_path / "fixed.mp4"
    code = main(["generate", "--video", str(source), "--audio", str(source), "--regenerate", "0.5", "1.0",
                 "--prompt", "footsteps", "--out", str(out), *_component_args(models)])
    assert code == 0, capsys.readouterr().err
    assert set(_streams(out)) == {"video", "audio"} and out.with_suffix(".flac").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--denoise", "0.5"], "denoise: 0.5 needs input audio to start from"),
    (["--regenerate", "1", "2"], "regenerate: a range to regenerate needs input audio"),
    (["--audio", "SILENT", "--denoise", "0.5"], "--audio"),
    (["--audio", "MISSING"], "--audio"),
])
def test_audio_options_are_checked_before_anything_loads(models, tmp_path, capsys, extra, message) -> None:
    from mmaudio import media

    silent = tmp_path / "silent.wav"
    media.write_audio(silent, torch.zeros(1, 16000), 16000)
    extra = [str(silent) if a == "SILENT" else str(tmp_path / "none.wav") if a == "MISSING" else a for a in extra]
    out = tmp_path / "out.wav"
    code = main(["generate", "--prompt", "x", "--duration", "1", "--out", str(out), *extra, *_component_args(models)])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not out.exists()


def test_a_three_minute_video_gets_a_three_minute_soundtrack(models, tmp_path, capsys) -> None:
    """180 s of video: generated in 8 s windows, each conditioned on its own span, into one soundtrack."""
    video = tmp_path / "three_minutes.mp4"
    write_moving_bar_video(video, frames=180 * 12, fps=12, step=2, bar=6)
    out = tmp_path / "three_minutes.flac"
    args = [a for a in _component_args(models) if a != "--quiet"]
    code = main(["generate", "--video", str(video), "--prompt", "waves\n[1:30] a storm", "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "windows:" in err and "done: 1 file(s), 180 s" in err
    with av.open(str(out)) as audio:
        stream = audio.streams.audio[0]
        samples = sum(frame.samples for frame in audio.decode(stream))
    assert stream.rate == 16000 and samples == 180 * 16000


def test_low_vram_mode_streams_the_network_and_clip_and_gives_the_same_audio(models, monkeypatch) -> None:
    """On a CPU the block copies change nothing: the audio must be bit-identical, and the network and CLIP must
    really have been streamed (each block's weights swapped in while it ran), the other models moved whole."""
    from mmaudio import engine
    from mmaudio.model import block_streaming

    files = engine.ComponentFiles(**models)
    plain = engine.generate(engine.load_models(files, device="cpu"), None, _request(), engine.DirectRuntime("cpu"))
    streamed_models = engine.load_models(files, device="cpu", offload=True)
    names = {id(streamed_models.features.clip.module): "clip", id(streamed_models.network.module): "network"}
    entered: list[str] = []
    original = block_streaming.stream_blocks

    def counting(model, device, **kwargs):
        assert len(block_streaming.streamed_blocks(model)) > 0
        entered.append(names[id(model)])
        return original(model, device, **kwargs)

    monkeypatch.setattr("mmaudio.engine.runtime.stream_blocks", counting)
    result = engine.generate(streamed_models, None, _request(), engine.DirectRuntime("cpu", low_vram=True))
    assert entered == ["clip", "network"]  # text-only: CLIP for the prompt, then sampling
    assert torch.equal(result.waveform, plain.waveform)
