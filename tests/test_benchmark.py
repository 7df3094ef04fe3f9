"""The benchmark script drives the engine end to end on the tiny variant and writes a complete JSON report.

It runs as users run it (``python bench/benchmark.py`` in a subprocess, so the library is loaded under the
benchmark's private name, apart from this test session's ``mmaudio``). Timings are only checked for being
finite and positive, never against thresholds: this machine's load decides them. One thread keeps small ops
free of OpenMP contention with other processes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY_ARGS = ["--variants", "tiny", "--device", "cpu", "--threads", "1", "--duration", "1", "--steps", "2",
             "--repeats", "2", "--video-size", "48x64", "--quality-dtypes", "bf16,fp16", "--quiet"]
FEATURE_STAGES = ("frames", "clip", "sync", "text")  # the engine's encode stages for one pass
ENGINE_STAGES = (*FEATURE_STAGES, "sampling", "decoding")
STAGES = (*ENGINE_STAGES, "features", "end_to_end")


def _run(tmp_path: Path, *extra: str) -> tuple[dict, str]:
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "benchmark.py"), *TINY_ARGS, *extra,
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"benchmark failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(out.read_text()), done.stdout


def _positive(value: object, what: str) -> None:
    assert isinstance(value, float) and math.isfinite(value) and value > 0, f"{what}: {value!r}"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    return _run(tmp_path_factory.mktemp("bench"))


def test_report_has_settings_and_environment(report: tuple[dict, str]) -> None:
    data, _ = report
    assert data["schema"] == "mmaudio-sync-benchmark/1"
    assert data["settings"]["steps"] == 2 and data["settings"]["duration"] == 1.0
    assert data["settings"]["device"] == "cpu" and data["settings"]["dtype"] == "fp32"
    env = data["environment"]
    assert env["torch"] and env["cpu"] and env["torch_threads"] == 1
    assert [r["variant"] for r in data["results"]] == ["tiny"]


def test_every_stage_is_timed_with_finite_positive_figures(report: tuple[dict, str]) -> None:
    data, _ = report
    result = data["results"][0]
    stages = result["stages"]
    assert set(STAGES) <= set(stages), sorted(stages)
    for name in STAGES:
        seconds = stages[name]["seconds"]
        assert len(seconds["runs"]) == 2, name
        for value in seconds["runs"]:
            _positive(value, f"{name} seconds")
        assert seconds["min"] <= seconds["median"] <= seconds["max"]
        assert stages[name]["peak_bytes"] > 0 and stages[name]["peak_delta_bytes"] >= 0
    steps = stages["sampling"]["step_seconds"]
    _positive(steps["median"], "seconds per step")
    assert steps["count"] == 2 * 2  # every Euler step of both repeats, marked by the engine's progress reports
    # The stages are marks on one clock inside end_to_end: the engine's stages add up to at most the whole (the
    # rest is the engine's own work between stages), and the encode stages to the features figure.
    for i in range(2):
        parts = sum(stages[n]["seconds"]["runs"][i] for n in ENGINE_STAGES)
        assert parts <= stages["end_to_end"]["seconds"]["runs"][i]
        encode = sum(stages[n]["seconds"]["runs"][i] for n in FEATURE_STAGES)
        assert stages["features"]["seconds"]["runs"][i] == pytest.approx(encode, rel=1e-9)
    assert stages["features"]["stages"] == list(FEATURE_STAGES)
    assert stages["end_to_end"]["peak_bytes"] >= max(stages[n]["peak_bytes"] for n in ENGINE_STAGES)
    # The engine told the runtime how much activation memory each stage needs.
    assert set(result["engine_memory_estimates"]) == {"clip", "sync", "text", "sampling", "decoding"}
    assert result["features"] == "all" and result["windows"]["count"] == 1 and result["waveform_finite"]


def test_sizes_and_sequence_lengths_follow_the_library(report: tuple[dict, str]) -> None:
    result = report[0]["results"][0]
    assert result["mode"] == "16k"
    lengths = result["sequence_lengths"]
    # 1 s at 16 kHz: ceil(16000 / 256 / 2) latents, 8 CLIP frames, 2 Synchformer segments of 8 tokens.
    assert lengths == {"latent": 32, "clip": 8, "sync": 16, "text": 77}
    for part in ("network", "vae_decoder", "vocoder", "clip", "synchformer"):
        assert result["parameters"][part] > 0, part
    assert result["network_weight_bytes"] == 4 * result["parameters"]["network"]


def test_two_pass_timing_and_quality_guard(report: tuple[dict, str]) -> None:
    """The sampling-only runs start from the engine's noise and features: the engine's batched latents and the
    two-pass ones (fast paths off) agree up to float32 summation order."""
    result = report[0]["results"][0]
    _positive(result["sampling_two_pass"]["seconds"]["median"], "two-pass sampling")
    _positive(result["ratios"]["batched_over_two_pass"], "batched / two-pass")
    quality = result["quality"]
    rows = {row["setting"]: row for row in quality["rows"]}
    assert {"fp32, batched guidance", "fp32, two-pass guidance", "bf16 weights, batched guidance",
            "fp16 weights, batched guidance"} <= set(rows)
    assert "fast paths off" in quality["baseline"] and "Winograd" in quality["fast_paths"]
    for setting in ("fp32, batched guidance", "fp32, two-pass guidance"):  # reordered float32 sums only
        assert rows[setting]["rel_l2"] < 1e-4, (setting, rows[setting])
    for row in rows.values():
        assert row["finite"] and math.isfinite(row["rel_l2"]) and -1.0 <= row["cosine"] <= 1.0 + 1e-12
    # Batching the two guidance branches changes only the summation order of float32 matmuls.
    assert rows["fp32, batched guidance"]["rel_l2"] < 1e-4
    assert rows["bf16 weights, batched guidance"]["rel_l2"] > rows["fp32, batched guidance"]["rel_l2"]


def test_targets_and_table(report: tuple[dict, str]) -> None:
    data, stdout = report
    names = [t["name"] for t in data["targets"]]
    assert any("paper" in n for n in names)
    for issue_target in ("small_16k sampling <= 0.7x", "large_44k_v2 end to end (frames on the GPU to waveform), "
                         "bf16, <= 0.5 s", "sampling >= 2x the reference", "peak GPU memory, bf16 weights, <= 4.5 GB",
                         "peak GPU memory, fp8_e4m3fn weights, <= 3.5 GB"):
        assert any(issue_target in n for n in names), issue_target
    # A CPU-only run of the tiny variant measures none of the issue's targets.
    assert all(t["met"] is None for t in data["targets"])
    for heading in ("variant", "end to end", "Quality guard", "Peak memory", "Stages of the engine"):
        assert heading in stdout


def test_random_features_and_reference_errors_are_reported(tmp_path: Path) -> None:
    data, _ = _run(tmp_path, "--features", "random", "--no-quality", "--no-two-pass", "--reference",
                   str(tmp_path / "no-such-checkout"))
    result = data["results"][0]
    assert "features" not in result["stages"] and "frames" not in result["stages"]
    assert set(result["stages"]) == {"sampling", "decoding", "end_to_end"}
    assert "random features" in result["features_note"]
    assert "not a checkout" in result["reference"]["skipped"]
    assert "quality" not in result and "sampling_two_pass" not in result
    _positive(result["stages"]["end_to_end"]["seconds"]["median"], "end to end")


@pytest.mark.skipif(not os.environ.get("MMAUDIO_REFERENCE_CODE"),
                    reason="set MMAUDIO_REFERENCE_CODE to a checkout of hkchengrex/MMAudio to compare with it")
def test_reference_runs_on_the_same_weights(tmp_path: Path) -> None:
    data, _ = _run(tmp_path, "--features", "random", "--reference", os.environ["MMAUDIO_REFERENCE_CODE"])
    result = data["results"][0]
    ref = result["reference"]
    _positive(ref["sampling"]["seconds"]["median"], "reference sampling")
    _positive(result["ratios"]["sampling_over_reference"], "ours / reference")
    assert ref["latent_agreement"]["rel_l2"] < 1e-4
    rows = {row["setting"]: row for row in result["quality"]["rows"]}
    # Our two-pass float32 path is the reference's arithmetic.
    assert rows["reference fp32 (two-pass)"]["rel_l2"] < 1e-5


def _cuda_row(dtype: str, end_to_end_s: float, peak_bytes: float, ratio: float | None,
              features: str = "all") -> dict:
    return {"variant": "large_44k_v2", "device": "cuda:0", "dtype": dtype, "features": features,
            "stages": {"end_to_end": {"seconds": {"median": end_to_end_s}, "peak_bytes": peak_bytes}},
            "ratios": {"sampling_over_reference": ratio} if ratio is not None else {}}


def test_gpu_targets_are_judged_from_cuda_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The verdicts a GPU run would get, from hand-made result rows (no GPU needed)."""
    monkeypatch.syspath_prepend(str(REPO))
    import torch

    from bench import benchmark
    from bench.runs import Settings

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _device=None: "test GPU")
    settings = Settings(device=torch.device("cuda"), log=lambda _msg: None)
    results = [_cuda_row("bf16", 0.42, 4.2e9, 0.45), _cuda_row("fp8_e4m3fn", 0.47, 3.7e9, None)]
    verdicts = {t["name"]: t["met"] for t in benchmark._targets(results, settings)}

    def verdict(fragment: str) -> bool | None:
        (found,) = [met for name, met in verdicts.items() if fragment in name]
        return found

    assert verdict("end to end (frames on the GPU to waveform)") is True
    assert verdict("sampling >= 2x") is True
    assert verdict("peak GPU memory, bf16") is True
    assert verdict("peak GPU memory, fp8_e4m3fn") is False
    assert verdict("small_16k sampling") is None  # no CPU row

    slow = [_cuda_row("bf16", 0.8, 5e9, 0.6)]
    verdicts = {t["name"]: t["met"] for t in benchmark._targets(slow, settings)}
    assert verdict("end to end (frames") is False and verdict("sampling >= 2x") is False
    assert verdict("peak GPU memory, bf16") is False and verdict("peak GPU memory, fp8") is None

    # Only a run from frames judges the end-to-end and memory targets (random features skip CLIP and Synchformer).
    verdicts = {t["name"]: t["met"] for t in benchmark._targets([_cuda_row("bf16", 0.1, 1e9, 0.3, "random")],
                                                                 settings)}
    assert verdict("end to end (frames") is None and verdict("peak GPU memory, bf16") is None


def test_memory_budget_adds_up() -> None:
    """Weight bytes from meta-device builds: per stage, all resident, and fp8 halving the network."""
    from bench.memory_budget import budget

    bf16 = budget("small_16k", "bf16")
    fp8 = budget("small_16k", "fp8_e4m3fn")
    assert bf16["all_resident"] == sum(bf16["components"].values())
    assert bf16["largest_stage"] == max(bf16["stages"].values()) == bf16["stages"]["features"]
    # 157.3 M network parameters in bf16 (plus small float32-free buffers)
    assert 2 * 157.2e6 < bf16["components"]["network"] < 2 * 157.5e6
    assert 0.5 * bf16["components"]["network"] < fp8["components"]["network"] < 0.55 * bf16["components"]["network"]
    assert fp8["components"]["clip"] == bf16["components"]["clip"]
    # low-VRAM: the network and CLIP streamed (a fraction of their weights on the device), the rest whole
    low = bf16["low_vram_stages"]
    assert low["decoding"] == bf16["stages"]["decoding"]
    assert bf16["components"]["synchformer"] < low["features"] < bf16["stages"]["features"] / 2
    assert 0 < low["sampling"] < bf16["stages"]["sampling"] / 2
    assert bf16["low_vram_largest_stage"] == max(low.values())


def test_staged_run_times_the_moves_of_every_stage(tmp_path: Path) -> None:
    """--staged: the runtime moves each engine stage's models to the device and back, each move a timed stage."""
    data, _ = _run(tmp_path, "--staged", "--no-quality", "--no-two-pass", "--repeats", "1")
    assert data["settings"]["staged"] is True
    result = data["results"][0]
    for stage in ENGINE_STAGES[1:]:  # frame choice moves no model
        for way in ("load", "unload"):
            _positive(result["stages"][f"{way}_{stage}"]["seconds"]["median"], f"{way}_{stage}")
    assert "load_frames" not in result["stages"]
    moves = result["stages"]["moves"]["stages"]
    assert {"load_sampling", "unload_decoding"} <= set(moves) and all(m.startswith(("load_", "unload_")) for m in moves)


@pytest.mark.parametrize("features", ["none", "all"])
def test_long_soundtrack_runs_as_the_engine_s_windows(tmp_path: Path, features: str) -> None:
    """Beyond 10 s the engine generates overlapping 8 s windows; the report gives their plan, the time of every
    stage and peak memory. --features none is text only (no video stages at all)."""
    data, stdout = _run(tmp_path, "--duration", "12", "--features", features, "--repeats", "1", "--warmup", "0",
                        "--video-size", "32x32", "--video-fps", "10")
    result = data["results"][0]
    assert result["windows"]["count"] >= 2 and result["soundtrack_seconds"] == 12
    # 12 s at 16 kHz: ceil(12 * 16000 / 256 / 2) latent frames, each window the 250 of 8 s.
    assert result["windows"]["total_latents"] == 375 and result["windows"]["window_latents"] == 250
    stages = result["stages"]
    expected = {"text", "sampling", "decoding", "end_to_end"} | ({"windows"} if features == "all" else set())
    assert expected <= set(stages) and not {"clip", "sync"} & set(stages)
    if features == "none":
        assert "frames" not in stages and "windows" not in stages and "text-only" in result["features_note"]
    assert stages["sampling"]["step_seconds"]["count"] == 2  # one mark per whole step (all windows), 2 steps
    assert stages["end_to_end"]["peak_bytes"] > 0
    assert "single_pass_note" in result and "quality" not in result and "sampling_two_pass" not in result
    assert "12 s, 2 windows" in stdout
