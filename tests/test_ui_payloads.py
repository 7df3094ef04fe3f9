"""The ``ui`` payloads for the frontend extension (nodes/ui_payloads.py), and parity of the browser's copies of
the backend rules (js/lib/timing.js, js/lib/waveform.js) with the Python they mirror.

``nodes/ui_payloads.py`` imports no ComfyUI, so it is loaded here straight from its file. The parity tests run the
JavaScript modules with Node (skipped when ``node`` is not installed) on a grid of clips and compare every number
with the library's own frame selection and sequence lengths.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mmaudio.errors import InvalidInputError
from mmaudio.features.frames import plan_frames
from mmaudio.model.config import TRAINING_DURATION_S
from mmaudio.model.sequence_config import SequenceLengths

REPO_ROOT = Path(__file__).resolve().parents[1]
NODE = shutil.which("node")


def _load_payloads():
    spec = importlib.util.spec_from_file_location("mmaudio_sync_ui_payloads", REPO_ROOT / "nodes" / "ui_payloads.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


up = _load_payloads()


def _strict_json(payload: dict) -> dict:
    """What the browser receives: must serialise without NaN/Infinity (the frontend's JSON.parse rejects them)."""
    return json.loads(json.dumps(payload, allow_nan=False))


def _reference_peaks(samples: torch.Tensor, columns: int) -> tuple[list, list]:
    """Plain per-sample loop over the binning rule: column k = samples [k*T//C, (k+1)*T//C)."""
    x = torch.nan_to_num(samples.double(), nan=0.0, posinf=0.0, neginf=0.0)
    length = x.shape[-1]
    cols = min(columns, length)
    peaks, rms = [], []
    for k in range(cols):
        start, end = k * length // cols, (k + 1) * length // cols
        chunk = x[:, start:end]
        peaks.append((float(chunk.min()), float(chunk.max())))
        rms.append(math.sqrt(float(chunk.square().mean())))
    return peaks, rms


# ---- timing --------------------------------------------------------------------------------------------------
def test_timing_payload_fields_and_cut_flag():
    payload = _strict_json(up.timing_payload(240, 24.0, 9.96, 79, 249, 30, requested_duration=12.0))
    assert list(payload) == [up.TIMING_KEY]
    (entry,) = payload[up.TIMING_KEY]
    assert entry["source"] == "video"
    assert entry["num_frames"] == 240 and entry["fps"] == 24.0
    assert entry["clip_length"] == pytest.approx(240 / 24.0)
    assert entry["duration"] == 9.96 and entry["requested_duration"] == 12.0
    assert (entry["clip_frames"], entry["sync_frames"], entry["segments"]) == (79, 249, 30)
    assert entry["cut"] is True
    assert entry["version"] == up.PAYLOAD_VERSION

    same = up.timing_payload(240, 24.0, 5.0, 40, 125, 14, requested_duration=5.0)[up.TIMING_KEY][0]
    assert same["cut"] is False
    clip_length = up.timing_payload(240, 24.0, 9.96, 79, 249, 30)[up.TIMING_KEY][0]
    assert clip_length["requested_duration"] is None and clip_length["cut"] is False


@pytest.mark.parametrize("frames, expected", [(None, "text"), (0, "text"), (1, "image"), (48, "video")])
def test_timing_payload_infers_source(frames, expected):
    entry = up.timing_payload(frames, None, 2.0, 16, 50, 5)[up.TIMING_KEY][0]
    assert entry["source"] == expected


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, 0.0, None, "x", True])
def test_timing_payload_without_valid_duration_is_empty(bad):
    assert up.timing_payload(10, 24.0, bad, 1, 1, 1) == {up.TIMING_KEY: []}


def test_timing_payload_sanitises_every_number():
    entry = _strict_json(up.timing_payload(float("nan"), float("inf"), 3.0, -4, 2.5, "7", source="bogus",
                                           requested_duration=float("nan"), clip_length=-2))[up.TIMING_KEY][0]
    assert entry["num_frames"] is None and entry["fps"] is None and entry["clip_length"] is None
    assert entry["requested_duration"] is None
    assert entry["clip_frames"] == 0 and entry["sync_frames"] == 0 and entry["segments"] == 7
    assert entry["source"] == "text"


def test_timing_payload_accepts_a_fraction_rate():
    from fractions import Fraction

    entry = _strict_json(up.timing_payload(100, Fraction(30000, 1001), 3.3, 26, 82, 9))[up.TIMING_KEY][0]
    assert entry["fps"] == pytest.approx(30000 / 1001)
    assert entry["clip_length"] == pytest.approx(100 * 1001 / 30000)


@pytest.mark.parametrize("source, duration", [("video", 7.92), ("image", 3.0), ("text", TRAINING_DURATION_S)])
def test_conditions_timing_payload_reports_what_each_encoder_read(source, duration):
    lengths = SequenceLengths.for_duration(duration, "44k")
    conditions = SimpleNamespace(duration=lengths.duration, clip_seq_len=lengths.clip_seq_len,
                                 sync_seq_len=lengths.sync_seq_len, source=source)
    entry = up.conditions_timing_payload(conditions, num_frames=80 if source == "video" else None,
                                         fps=10.0 if source == "video" else None)[up.TIMING_KEY][0]
    assert entry["source"] == source and entry["duration"] == lengths.duration
    if source == "video":
        assert entry["clip_frames"] == lengths.clip_seq_len
        assert entry["sync_frames"] == lengths.num_sync_frames
        assert entry["segments"] == lengths.num_sync_segments
    elif source == "image":
        assert entry["clip_frames"] == lengths.clip_seq_len
        assert entry["sync_frames"] == entry["segments"] == 0
    else:
        assert entry["clip_frames"] == entry["sync_frames"] == entry["segments"] == 0


def test_conditions_timing_payload_of_something_else_is_empty():
    assert up.conditions_timing_payload(object()) == {up.TIMING_KEY: []}


def test_clip_description_from_rate_and_from_timestamps():
    by_rate = up.clip_description(50, 25.0)
    assert by_rate == {"num_frames": 50, "fps": 25.0, "clip_length": 2.0, "timestamps": False}
    times = torch.arange(50, dtype=torch.float64) / 25.0
    by_times = up.clip_description(50, None, times)
    assert by_times["timestamps"] is True
    assert by_times["fps"] == pytest.approx(25.0)
    assert by_times["clip_length"] == pytest.approx(2.0)
    assert up.clip_description(1, None)["clip_length"] is None


# ---- waveform ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels, length, columns", [(1, 1000, 64), (2, 997, 100), (1, 50, 512), (3, 4096, 512)])
def test_waveform_peaks_match_a_plain_loop(channels, length, columns):
    generator = torch.Generator().manual_seed(length + columns)
    samples = torch.randn(channels, length, generator=generator) * 0.4
    summary = up.waveform_peaks(samples, columns)
    peaks, rms = _reference_peaks(samples, columns)
    assert len(summary["peaks"]) == min(columns, length) == len(summary["rms"])
    for (lo, hi), (rlo, rhi) in zip(summary["peaks"], peaks, strict=True):
        assert lo == pytest.approx(rlo, abs=1e-4) and hi == pytest.approx(rhi, abs=1e-4)
        assert lo <= hi
    assert summary["rms"] == pytest.approx(rms, abs=1e-4)
    assert summary["peak"] == pytest.approx(float(samples.abs().max()), abs=1e-6)
    assert summary["channels"] == channels and summary["num_samples"] == length


def test_waveform_peaks_blocks_give_the_same_result(monkeypatch):
    samples = torch.randn(1, 20000, generator=torch.Generator().manual_seed(3))
    whole = up.waveform_peaks(samples, 300)
    monkeypatch.setattr(up, "COLUMN_BLOCK_SAMPLES", 100)  # a few columns per block
    assert up.waveform_peaks(samples, 300) == whole


def test_waveform_peaks_treat_non_finite_samples_as_silence():
    samples = torch.tensor([[0.5, float("nan"), float("inf"), -0.25]])
    summary = _strict_json(up.waveform_peaks(samples, 4))
    assert summary["peaks"] == [[0.5, 0.5], [0.0, 0.0], [0.0, 0.0], [-0.25, -0.25]]


def test_waveform_peaks_of_nothing():
    assert up.waveform_peaks(torch.zeros(1, 0), 512)["peaks"] == []
    with pytest.raises(ValueError, match="waveform"):
        up.waveform_peaks(torch.zeros(1, 2, 3, 4), 8)


def test_waveform_payload_one_entry_per_batch_row():
    rate = 16000
    waveform = torch.zeros(3, 1, rate // 2)
    waveform[1, 0, 100] = 0.5
    payload = _strict_json(up.waveform_payload(waveform, rate, 128, labels=["a", "b"]))
    entries = payload[up.WAVEFORM_KEY]
    assert [e["index"] for e in entries] == [0, 1, 2]
    assert all(e["batch_size"] == 3 and e["sample_rate"] == rate for e in entries)
    assert all(e["duration"] == pytest.approx(0.5) and e["num_samples"] == rate // 2 for e in entries)
    assert [e["label"] for e in entries] == ["a", "b", None]
    assert entries[0]["peak"] == 0.0 and entries[1]["peak"] == pytest.approx(0.5)
    assert all(len(e["peaks"]) == 128 for e in entries)
    assert not {"filename", "format", "subfolder"} & set(entries[0])


def test_waveform_payload_shapes_and_limits():
    assert len(up.waveform_payload(torch.zeros(2, 100), 8000)[up.WAVEFORM_KEY]) == 1  # [C, T]
    assert up.waveform_payload(torch.zeros(100), 8000)[up.WAVEFORM_KEY][0]["channels"] == 1  # [T]
    assert len(up.waveform_payload(torch.zeros(40, 1, 10), 8000)[up.WAVEFORM_KEY]) == up.MAX_WAVEFORMS
    assert len(up.waveform_payload(torch.zeros(4, 1, 10), 8000, max_items=2)[up.WAVEFORM_KEY]) == 2
    assert up.waveform_payload(None, 8000) == {up.WAVEFORM_KEY: []}
    entry = _strict_json(up.waveform_payload(torch.zeros(1, 1, 10), float("nan")))[up.WAVEFORM_KEY][0]
    assert entry["sample_rate"] is None and entry["duration"] is None
    with pytest.raises(ValueError, match="waveform"):
        up.waveform_payload(torch.zeros(1, 1, 1, 1), 8000)


def test_audio_waveform_payload_and_merge():
    audio = {"waveform": torch.zeros(1, 1, 441), "sample_rate": 44100}
    merged = up.merge_payloads(up.audio_waveform_payload(audio, 16), None,
                               up.timing_payload(None, None, 8.0, 0, 0, 0))
    assert set(merged) == {up.WAVEFORM_KEY, up.TIMING_KEY}
    assert merged[up.WAVEFORM_KEY][0]["duration"] == pytest.approx(0.01)
    doubled = up.merge_payloads(merged, merged)
    assert len(doubled[up.WAVEFORM_KEY]) == 2


# ---- parity of the browser's copies with the Python rules ----------------------------------------------------
def _run_node(script: str, data: object) -> object:
    completed = subprocess.run([NODE, "--input-type=module", "-e", script], input=json.dumps(data), text=True,
                               capture_output=True, cwd=REPO_ROOT, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


JS_TIMING = """
import { computeTiming } from './js/lib/timing.js';
let text = '';
for await (const chunk of process.stdin) text += chunk;
const out = JSON.parse(text).map(([numFrames, fps, duration]) => computeTiming({ numFrames, fps, duration }));
process.stdout.write(JSON.stringify(out));
"""


def _python_timing(num_frames: int, fps: float, duration: float) -> dict | None:
    """The encode node's rules (nodes/adapters.encode_conditions): None where the backend raises."""
    requested = duration if duration > 0 else None
    try:
        if num_frames == 0:
            lengths = SequenceLengths.for_duration(requested or TRAINING_DURATION_S, "44k")
            effective = lengths.duration
        else:
            plan = plan_frames(num_frames, fps, duration=requested)
            effective = plan.duration
            lengths = SequenceLengths.for_duration(effective, "44k")
            if not plan.is_still:
                assert len(plan.clip_indices) == lengths.clip_seq_len
                assert len(plan.sync_indices) == lengths.num_sync_frames
    except InvalidInputError:
        return None
    return {"duration": effective, "clipFrames": lengths.clip_seq_len, "syncFrames": lengths.num_sync_frames,
            "segments": lengths.num_sync_segments}


@pytest.mark.skipif(NODE is None, reason="node (JavaScript) is not installed")
def test_js_timing_matches_the_backend_on_a_grid():
    rates = [24.0, 25.0, 30.0, 30000 / 1001, 24000 / 1001, 60000 / 1001, 12.5, 8.0, 10.0, 1000 / 33, 7.3, 48.0,
             120.0, 29.97, 23.976]
    counts = [0, 1, 2, 5, 16, 17, 20, 24, 50, 80, 101, 241, 300, 1001]
    durations = [0.0, 0.1, 0.5, 0.63, 0.64, 0.65, 1.0, 2.5, 3.33, 5.0, 7.99, 8.0, 10.0, 12.34]
    cases = [(n, f, d) for n in counts for f in rates for d in durations]
    js = _run_node(JS_TIMING, cases)
    mismatches = []
    for (n, f, d), got in zip(cases, js, strict=True):
        want = _python_timing(n, f, d)
        if want is None:
            if got["ok"]:
                mismatches.append(((n, f, d), "backend raises", got))
            continue
        if not got["ok"]:
            mismatches.append(((n, f, d), want, got["error"]))
            continue
        mine = {k: got[k] for k in want}
        if n == 1:  # a still image: Synchformer reads nothing (the network still gets its lengths)
            mine["syncFrames"], mine["segments"] = want["syncFrames"], want["segments"]
        if mine != want:
            mismatches.append(((n, f, d), want, mine))
        requested = d if d > 0 else None
        if got["cut"] != (requested is not None and want["duration"] < requested):
            mismatches.append(((n, f, d), "cut flag", got["cut"]))
    assert not mismatches, f"{len(mismatches)} of {len(cases)} differ, e.g. {mismatches[:5]}"


JS_PEAKS = """
import { computePeaks } from './js/lib/waveform.js';
let text = '';
for await (const chunk of process.stdin) text += chunk;
const { channels, columns } = JSON.parse(text);
const p = computePeaks(channels.map((c) => Float32Array.from(c)), columns);
process.stdout.write(JSON.stringify({ min: Array.from(p.min), max: Array.from(p.max), rms: Array.from(p.rms) }));
"""


@pytest.mark.skipif(NODE is None, reason="node (JavaScript) is not installed")
@pytest.mark.parametrize("length, columns", [(1000, 64), (997, 300), (40, 512)])
def test_js_peaks_match_the_python_payload(length, columns):
    samples = torch.randn(2, length, generator=torch.Generator().manual_seed(length)) * 0.3
    python = up.waveform_peaks(samples, columns)
    js = _run_node(JS_PEAKS, {"channels": samples.tolist(), "columns": columns})
    assert len(js["min"]) == len(python["peaks"])
    assert js["min"] == pytest.approx([p[0] for p in python["peaks"]], abs=1e-4)
    assert js["max"] == pytest.approx([p[1] for p in python["peaks"]], abs=1e-4)
    assert js["rms"] == pytest.approx(python["rms"], abs=1e-4)


def test_a_windowed_soundtrack_sends_its_window_plan():
    from mmaudio.engine.windows import plan_windows

    plan = plan_windows(30.0, "44k")
    conditions = SimpleNamespace(duration=plan.duration, clip_seq_len=64, sync_seq_len=192, source="video",
                                 windows=plan, requested_duration=None, clip=None)
    entry = up.conditions_timing_payload(conditions)[up.TIMING_KEY][0]
    assert len(entry["windows"]) == plan.num_windows >= 4
    assert entry["windows"][0] == [0.0, 8.0] and entry["windows"][-1][1] == pytest.approx(30.0, abs=0.03)
    assert entry["clip_frames"] == 64 * plan.num_windows and entry["segments"] == 24 * plan.num_windows
    one_pass = SimpleNamespace(duration=8.0, clip_seq_len=64, sync_seq_len=192, source="video",
                               windows=plan_windows(8.0, "44k"))
    assert "windows" not in up.conditions_timing_payload(one_pass)[up.TIMING_KEY][0]
