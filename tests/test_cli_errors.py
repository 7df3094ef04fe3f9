"""Every bad input of the command line that has a rule, in one table: a clear message naming what was wrong, exit
code 2, before any model is loaded where that can be known, no file written and no input touched. (The rules the
nodes share are in tests/test_engine_hosts.py's BAD_INPUTS.) Interrupts exit 130 with one line."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from mmaudio import engine
from mmaudio.cli import main

from .comfy_stub import tiny_weights
from .video_factory import write_moving_bar_video


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("weights")
    names = tiny_weights.write_models(folder)
    return {kind: folder / getattr(names, kind) for kind in ("network", "vae", "vocoder", "clip", "synchformer")}


def _video(path: Path, codec: str = "mpeg4", frames: int = 24) -> Path:
    return write_moving_bar_video(path, frames=frames, codec=codec, faststart=path.suffix == ".mp4")


def _args(models: dict[str, Path], *extra: str) -> list[str]:
    files = [a for kind, path in models.items() for a in (f"--{kind}", str(path))]
    return ["generate", *files, "--no-download", "--steps", "2", "--device", "cpu", "--quiet", *extra]


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails the test if a model would be loaded: these inputs must be refused before."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(engine, "load_models", refuse)


def _integer_network(models: dict[str, Path], folder: Path) -> Path:
    from safetensors.torch import load_file, save_file

    state = load_file(str(models["network"]))
    state["latent_mean"] = state["latent_mean"].to(torch.int32)
    path = folder / "quantized_network.safetensors"
    save_file(state, str(path))
    return path


# (what to pass, given the temporary folder and the models; the words the message must hold)
CASES = {
    "output is the input video": (lambda d, m: ["--video", str(_video(d / "same.mp4")), "--out", str(d / "same.mp4")],
                                  "is the same file as the input --video"),
    "output through a symlink to the input": (
        lambda d, m: ["--video", str(_video(d / "in.mp4")), "--out", str(_link(d / "in.mp4", d / "link.mp4"))],
        "is the same file as the input --video"),
    "output is a folder": (lambda d, m: ["--prompt", "x", "--out", str(_folder(d / "out.wav"))], "is a folder"),
    "output folder missing": (lambda d, m: ["--prompt", "x", "--out", str(d / "nowhere" / "a.wav")], "does not exist"),
    "output folder not writable": (lambda d, m: ["--prompt", "x", "--out", "/proc/mmaudio.wav"], "/proc"),
    "audio output without video": (lambda d, m: ["--prompt", "x", "--out", str(d / "a.wav"), "--audio-out",
                                                 str(d / "b.flac")], "--audio-out: only with a video --out"),
    "audio-out is a folder": (lambda d, m: ["--video", str(_video(d / "v.mp4")), "--out", str(d / "o.mp4"),
                                            "--audio-out", str(_folder(d / "sound.flac"))], "--audio-out"),
    "audio-out with a video name": (lambda d, m: ["--video", str(_video(d / "v.mp4")), "--out", str(d / "o.mp4"),
                                                  "--audio-out", str(d / "o2.mp4")], "not an audio file name"),
    "h264 into webm": (lambda d, m: ["--video", str(_video(d / "h.mp4", "libx264")), "--out", str(d / "o.webm")],
                       "cannot be copied into a webm file"),
    "unknown output format": (lambda d, m: ["--prompt", "x", "--out", str(d / "a.xyz")], "--out"),
    "video output for text": (lambda d, m: ["--prompt", "x", "--out", str(d / "a.mp4")], "without --video"),
    "missing video": (lambda d, m: ["--video", str(d / "none.mp4"), "--out", str(d / "o.mp4")],
                      "--video"),
    "not a video": (lambda d, m: ["--video", str(_text(d / "notes.mp4")), "--out", str(d / "o.mp4")], "notes.mp4"),
    "missing network file": (lambda d, m: ["--prompt", "x", "--out", str(d / "a.wav"), "--network",
                                           str(d / "none.safetensors")], "--network"),
    "network of the wrong kind": (lambda d, m: ["--prompt", "x", "--out", str(d / "a.wav"), "--network",
                                                str(m["vae"])], "is not an MMAudio flow network"),
    "variant of another mode": (lambda d, m: ["--prompt", "x", "--out", str(d / "a.wav"), "--variant",
                                              "large_44k_v2"], "--variant large_44k_v2 is a 44k model"),
    "device name": (lambda d, m: ["--prompt", "x", "--out", str(d / "a.wav"), "--device", "gpu0"],
                    "device 'gpu0': not a device name"),
    "cuda without a GPU": (lambda d, m: ["--prompt", "x", "--out", str(d / "a.wav"), "--device", "cuda"],
                           "device 'cuda': no CUDA device is usable here"),
    "steps": (lambda d, m: ["--prompt", "x", "--out", str(d / "a.wav"), "--steps", "0"], "steps: expected"),
    "samples": (lambda d, m: ["--prompt", "x", "--out", str(d / "a.wav"), "--samples", "0"], "samples: expected"),
    "cfg": (lambda d, m: ["--prompt", "x", "--out", str(d / "a.wav"), "--cfg", "-1"], "cfg: expected"),
    "seed": (lambda d, m: ["--prompt", "x", "--out", str(d / "a.wav"), "--seed", str(2**64)], "seed: expected"),
    "duration": (lambda d, m: ["--prompt", "x", "--out", str(d / "a.wav"), "--duration", "5000"], "duration:"),
    "lowvram with compile": (lambda d, m: ["--prompt", "x", "--out", str(d / "a.wav"), "--lowvram", "--compile",
                                           "compile"], "--lowvram streams the network's blocks"),
    "fade": (lambda d, m: ["--prompt", "x", "--out", str(d / "a.wav"), "--audio", str(_tone(d / "t.wav")),
                           "--regenerate", "1", "1.1", "--fade", "0.5"], "fade: 0.5 s at each edge"),
}


def _link(target: Path, link: Path) -> Path:
    link.symlink_to(target)
    return link


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _text(path: Path) -> Path:
    path.write_bytes(b"this is not a video")
    return path


def _tone(path: Path) -> Path:
    from mmaudio import media

    media.write_audio(path, torch.sin(torch.arange(16000) / 16000 * 2 * torch.pi * 440).unsqueeze(0) * 0.3, 16000)
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_before_any_model_loads(case: str, models, tmp_path: Path, no_loading,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    make, message = CASES[case]
    extra = make(tmp_path, models)
    if case in ("missing network file", "network of the wrong kind"):
        args = [a for a in _args(models) if a not in ("--network", str(models["network"]))] + extra
    elif case == "variant of another mode":
        args = _args(models, *extra)
    else:
        args = _args(models, *extra)
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()}
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line, no traceback
    assert message in err, err
    after = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before, "nothing written, no input touched"


def test_a_quantized_checkpoint_is_refused_in_words(models, tmp_path: Path, capsys) -> None:
    bad = _integer_network(models, tmp_path)
    args = [a for a in _args(models) if a not in ("--network", str(models["network"]))]
    code = main([*args, "--network", str(bad), "--prompt", "x", "--out", str(tmp_path / "a.wav")])
    err = capsys.readouterr().err
    assert code == 2 and "integer tensor" in err and "latent_mean" in err, err


@pytest.mark.parametrize("where", ["loading", "sampling", "writing"])
def test_ctrl_c_anywhere_exits_130_with_one_line_and_no_output(where: str, models, tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    from mmaudio import media

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    target = {"loading": (engine, "load_models"), "sampling": (engine, "generate"),
              "writing": (media, "write_audio")}[where]
    monkeypatch.setattr(*target, interrupt)
    out = tmp_path / "a.wav"
    code = main(_args(models, "--prompt", "x", "--duration", "1", "--out", str(out)))
    err = capsys.readouterr().err
    assert code == 130 and err == "interrupted: nothing was written\n"
    assert not list(tmp_path.iterdir())


# Where a real run is when Ctrl-C arrives: (class, method, which call raises) inside each stage of the chain.
INSIDE_A_STAGE = {
    "features": ("mmaudio.features.clip", "ClipEncoder", "encode_tokens", 1),
    "sampling": ("mmaudio.model.network", "MMAudioNetwork", "predict_flow", 2),  # mid-run, after a first forward
    "decoding": ("mmaudio.vocoder.bigvgan", "BigVGAN", "forward", 1),
}


@pytest.mark.parametrize("stage", list(INSIDE_A_STAGE))
def test_ctrl_c_inside_a_stage_exits_130_with_one_line_and_no_output(stage: str, models, tmp_path: Path,
                                                                     monkeypatch, capsys) -> None:
    import importlib

    module, owner, method, nth = INSIDE_A_STAGE[stage]
    cls = getattr(importlib.import_module(module), owner)
    original, calls = getattr(cls, method), []

    def interrupted_at_the_nth_call(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == nth:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, interrupted_at_the_nth_call)
    code = main(_args(models, "--prompt", "x", "--duration", "1", "--steps", "3", "--out", str(tmp_path / "a.wav")))
    assert len(calls) == nth, f"the run never reached {owner}.{method} in the {stage} stage"
    assert code == 130 and capsys.readouterr().err == "interrupted: nothing was written\n"
    assert not list(tmp_path.iterdir())


def test_an_interrupt_a_library_turned_into_another_error_is_still_an_interrupt(models, tmp_path: Path,
                                                                                 monkeypatch, capsys) -> None:
    """Ctrl-C inside PyTorch's loader once came out as "ValueError: could not determine the shape of object type
    'torch.storage.UntypedStorage'"."""
    def garbled(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            signal.sigtimedwait([], 0) if hasattr(signal, "sigtimedwait") else None
        except KeyboardInterrupt:
            pass
        raise ValueError("could not determine the shape of object type 'torch.storage.UntypedStorage'")

    monkeypatch.setattr(engine, "load_models", garbled)
    code = main(_args(models, "--prompt", "x", "--duration", "1", "--out", str(tmp_path / "a.wav")))
    assert code == 130 and capsys.readouterr().err == "interrupted: nothing was written\n"


def test_a_network_that_makes_nan_is_reported_before_writing(models, tmp_path: Path, capsys) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(models["network"]))
    state["final_layer.conv.weight"] = torch.full_like(state["final_layer.conv.weight"], float("nan"))
    broken = tmp_path / "broken_network.safetensors"
    save_file(state, str(broken))
    args = [a for a in _args(models) if a not in ("--network", str(models["network"]))]
    out = tmp_path / "a.wav"
    code = main([*args, "--network", str(broken), "--prompt", "x", "--duration", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "NaN or infinite latents" in err, err
    assert not out.exists()


def test_outputs_get_the_permissions_of_a_new_file(models, tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        out = tmp_path / "a.wav"
        assert main(_args(models, "--prompt", "x", "--duration", "1", "--out", str(out))) == 0
    finally:
        os.umask(previous)
    assert out.stat().st_mode & 0o777 == 0o644


def test_a_truncated_video_is_reported(models, tmp_path: Path, capsys) -> None:
    """An mp4 whose index (at the front) promises 10 s, cut after about 3 s of picture."""
    whole = _video(tmp_path / "whole.mp4", frames=120)
    cut = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "a.wav"
    code = main(_args(models, "--video", str(cut), "--out", str(out)))
    err = capsys.readouterr().err
    assert code == 0, err
    assert "warning: the video decodes to" in err and "truncated" in err, err
