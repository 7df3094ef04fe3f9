"""Soundtracks of any length: window plans, blend weights, one trajectory over windows, and bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mmaudio import engine
from mmaudio.engine.conditions import EncodedConditions
from mmaudio.engine.prompts import parse_prompts
from mmaudio.engine.windows import WindowPlan, WindowSettings, blend_weights, on_grid_of, plan_windows
from mmaudio.errors import InvalidInputError
from mmaudio.model import MMAudioNetwork, NetworkConfig, SequenceLengths
from mmaudio.modes import MODES
from mmaudio.sampling import build_conditions, guided_velocity, initial_noise
from tests.parity.cases import rel_l2

REPO = Path(__file__).resolve().parents[1]
CLIP_DIM, SYNC_DIM, TEXT_DIM, TEXT_LEN = 24, 16, 20, 10


def tiny_network(latent_dim: int = 8, seed: int = 0) -> MMAudioNetwork:
    """A small random 16 kHz network (std 0.3 weights: every block changes its input)."""
    lengths = SequenceLengths.for_duration(8.0, "16k")
    config = NetworkConfig(name="tiny", latent_dim=latent_dim, clip_dim=CLIP_DIM, sync_dim=SYNC_DIM,
                           text_dim=TEXT_DIM, hidden_dim=32, depth=2, fused_depth=1, num_heads=2, v2=True,
                           mode="16k", text_seq_len=TEXT_LEN, latent_seq_len=lengths.latent_seq_len,
                           clip_seq_len=lengths.clip_seq_len, sync_seq_len=lengths.sync_seq_len)
    torch.manual_seed(seed)
    net = MMAudioNetwork(config).eval()
    with torch.no_grad():
        for param in net.parameters():
            param.normal_(0.0, 0.3)
    return net


def conditions_for(plan: WindowPlan, *, seed: int = 0, video: bool = True, same_windows: bool = False,
                   rows: int = 1) -> EncodedConditions:
    """Hand-made encoded conditions: random features per window (or one set repeated), one text per row."""
    gen = torch.Generator().manual_seed(seed)
    lengths = SequenceLengths.for_duration(plan.window_duration, "44k")
    count = 1 if same_windows else plan.num_windows
    clip = torch.randn(count, lengths.clip_seq_len, CLIP_DIM, generator=gen)
    sync = torch.randn(count, lengths.sync_seq_len, SYNC_DIM, generator=gen)
    if same_windows:
        clip, sync = clip.expand(plan.num_windows, -1, -1), sync.expand(plan.num_windows, -1, -1)
    texts = torch.randn(rows, TEXT_LEN, TEXT_DIM, generator=gen)
    return EncodedConditions(
        windows=plan, clip_features=clip.clone() if video else None, sync_features=sync.clone() if video else None,
        text_features=texts, text_index=torch.arange(rows)[:, None].expand(rows, plan.num_windows).clone(),
        negative_features=None, negative_index=torch.full((rows, plan.num_windows), -1),
        prompts=parse_prompts("\n".join(f"prompt {r}" for r in range(rows))), source="video" if video else "text")


def one_pass(seconds: float) -> WindowPlan:
    return WindowPlan(duration=seconds, mode=None, total_latents=0, window_latents=0, starts=(0,))


def run(net: MMAudioNetwork, conditions: EncodedConditions, *, steps: int = 2, seed: int = 3,
        samples: int = 1) -> torch.Tensor:
    settings = engine.SamplingSettings(seed=seed, steps=steps, cfg=4.5, samples=samples)
    placed = engine.Placed(net, torch.device("cpu"), torch.float32)
    return engine.sample_latents(placed, conditions, settings, engine.DirectRuntime()).latents


# ---- plans ---------------------------------------------------------------------------------------------------
def test_up_to_the_threshold_a_soundtrack_is_one_pass() -> None:
    for seconds in (0.64, 8.0, 10.0):
        plan = plan_windows(seconds, "44k")
        assert plan.is_single and plan.num_windows == 1 and plan.window_duration == seconds
    assert not plan_windows(10.01, "44k").is_single
    assert plan_windows(9.0, "44k", force=True).num_windows == 2  # a timed prompt needs windows to follow it
    assert plan_windows(8.0, "44k", force=True).is_single  # nothing to follow inside one window


@pytest.mark.parametrize("mode", ["16k", "44k"])
@pytest.mark.parametrize("seconds", [10.5, 20.0, 61.3, 600.0])
def test_windows_cover_the_timeline_on_the_latent_grid(mode: str, seconds: float) -> None:
    plan = plan_windows(seconds, mode)
    spec = MODES[mode]
    window = SequenceLengths.for_duration(8.0, mode).latent_seq_len
    assert plan.window_latents == window == {"16k": 250, "44k": 345}[mode]
    assert plan.total_latents == SequenceLengths.for_duration(seconds, mode).latent_seq_len
    assert plan.starts[0] == 0 and plan.starts[-1] == plan.total_latents - window
    overlaps = [a + window - b for a, b in zip(plan.starts, plan.starts[1:], strict=False)]
    assert min(overlaps) >= 2.0 * spec.latent_rate  # at least the overlap asked for
    assert max(overlaps) - min(overlaps) <= 1  # spread evenly
    # A window stands for the time its latent frames stand for in one pass.
    assert plan.start_seconds(1) == plan.starts[1] * spec.samples_per_latent / spec.sample_rate


def test_window_settings_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="window_overlap"):
        WindowSettings(overlap_s=5.0)
    with pytest.raises(InvalidInputError, match="threshold"):
        WindowSettings(threshold_s=4.0)


@pytest.mark.parametrize("seconds", [10.5, 14.0, 33.3])
def test_blend_weights_are_smooth_and_sum_to_one_where_two_windows_meet(seconds: float) -> None:
    plan = plan_windows(seconds, "16k")
    weights = blend_weights(plan).double()
    coverage = torch.zeros(plan.total_latents, dtype=torch.float64)
    count = torch.zeros(plan.total_latents, dtype=torch.int64)
    for k, start in enumerate(plan.starts):
        coverage[start:start + plan.window_latents] += weights[k]
        count[start:start + plan.window_latents] += 1
    assert bool((weights >= 0).all()) and bool((weights <= 1).all()) and bool((coverage > 0).all())
    assert torch.allclose(coverage[count == 2], torch.ones(1, dtype=torch.float64), atol=1e-6)
    assert bool((coverage[count == 1] == 1).all())
    assert float(weights[:, 1:].sub(weights[:, :-1]).abs().max()) < 0.1  # no jump from one frame to the next


# ---- one trajectory ------------------------------------------------------------------------------------------
def test_one_window_reproduces_the_single_pass_exactly() -> None:
    net = tiny_network()
    single = conditions_for(one_pass(8.0), seed=1, rows=2)
    window = WindowPlan(duration=8.0, mode="16k", total_latents=250, window_latents=250, starts=(0,))
    windowed = EncodedConditions(**{**single.__dict__, "windows": window})
    assert torch.equal(run(net, single, samples=2), run(net, windowed, samples=2))


def test_each_step_blends_the_velocities_of_standalone_windows() -> None:
    """After one Euler step (t: 0 -> 1) the timeline is x0 + the blended velocity, where each window's velocity is
    exactly that of an 8 s clip made of its slice of the noise and its own conditions, wherever it sits."""
    net = tiny_network()
    plan = plan_windows(20.0, "16k")
    conditions = conditions_for(plan, seed=2)
    got = run(net, conditions, steps=1, seed=5)
    x0 = initial_noise(5, 1, plan.total_latents, net.latent_dim)
    weights = blend_weights(plan)
    blended = torch.zeros_like(x0)
    coverage = torch.zeros(plan.total_latents)
    with torch.inference_mode():
        for k, start in enumerate(plan.starts):
            cond, empty = build_conditions(net, clip_f=conditions.clip_features[k:k + 1],
                                           sync_f=conditions.sync_features[k:k + 1],
                                           text_f=conditions.text_features)
            v = guided_velocity(net, cond, empty, 4.5)(torch.tensor(0.0), x0[:, start:start + 250])
            blended[:, start:start + 250] += weights[k][None, :, None] * v
            coverage[start:start + 250] += weights[k]
    expected = net.unnormalize(x0 + blended / coverage[None, :, None])
    assert rel_l2(got, expected) < 1e-5


def test_equal_windows_give_a_translation_consistent_velocity() -> None:
    """The same latent content under the same conditions gets the same velocity in every window: nothing in a
    window knows where on the timeline it sits."""
    net = tiny_network()
    plan = plan_windows(26.0, "16k")
    conditions = conditions_for(plan, seed=4, same_windows=True)
    stride = plan.starts[1] - plan.starts[0]
    content = initial_noise(9, 1, 250, net.latent_dim)
    timeline = torch.zeros(1, plan.total_latents, net.latent_dim)
    timeline[:, plan.starts[1]:plan.starts[1] + 250] = content
    shifted = torch.zeros_like(timeline)
    shifted[:, plan.starts[2]:plan.starts[2] + 250] = content
    assert plan.starts[2] - plan.starts[1] in (stride - 1, stride, stride + 1)
    with torch.inference_mode():
        cond, empty = build_conditions(net, clip_f=conditions.clip_features[1:2], sync_f=conditions.sync_features[1:2],
                                       text_f=conditions.text_features)
        velocity = guided_velocity(net, cond, empty, 4.5)
        t = torch.tensor(0.3)
        here = velocity(t, timeline[:, plan.starts[1]:plan.starts[1] + 250])
        there = velocity(t, shifted[:, plan.starts[2]:plan.starts[2] + 250])
    assert torch.equal(here, there)


@pytest.mark.parametrize("steps", [1, 2])
def test_changing_one_window_changes_the_latents_only_within_reach(steps: int) -> None:
    """A window's new frames change its own span at the first step; every further step lets the change cross one
    overlap into the next window (the windows agree through their overlaps), and nothing beyond that moves."""
    net = tiny_network()
    plan = plan_windows(26.0, "16k")
    assert plan.num_windows >= 4
    base = conditions_for(plan, seed=6)
    clip = base.clip_features.clone()
    clip[0] += 1.0  # new frames for the first window only
    changed = EncodedConditions(**{**base.__dict__, "clip_features": clip})
    before, after = run(net, base, steps=steps), run(net, changed, steps=steps)
    differs = (before != after).any(dim=-1)[0]
    reach_end = plan.starts[steps - 1] + plan.window_latents  # the span of windows 0 .. steps - 1
    assert bool(differs[:plan.window_latents].any())
    assert not bool(differs[reach_end:].any())
    if steps == 1:
        assert bool(differs[:plan.window_latents].all()) or int(differs[:plan.window_latents].sum()) > 200


def test_windows_planned_on_another_grid_move_to_the_networks() -> None:
    """Conditions encoded without the network (44.1 kHz grid) sample with a 16 kHz network: every window moves to
    the frame nearest its time, so its conditions are off by less than half a latent frame."""
    plan = plan_windows(61.0, "44k")
    moved = on_grid_of(plan, "16k")
    assert moved.mode == "16k" and moved.num_windows == plan.num_windows
    assert moved.total_latents == SequenceLengths.for_duration(61.0, "16k").latent_seq_len
    assert moved.starts[-1] == moved.total_latents - 250
    for k in range(plan.num_windows):
        assert abs(moved.start_seconds(k) - plan.start_seconds(k)) <= 0.5 / MODES["16k"].latent_rate + 1e-9
    net = tiny_network()
    latents = run(net, conditions_for(plan_windows(20.0, "44k")))
    assert latents.shape == (1, SequenceLengths.for_duration(20.0, "16k").latent_seq_len, net.latent_dim)


def test_progress_counts_windows_times_steps_and_cancel_stops_within_a_step() -> None:
    net = tiny_network()
    plan = plan_windows(40.0, "16k")
    reports: list[tuple[int, int]] = []

    class CancelledError(Exception):
        pass

    class Recording(engine.DirectRuntime):
        def progress(self, stage: str, done: int, total: int) -> None:
            reports.append((done, total))
            if len(reports) == 2:
                raise CancelledError

    settings = engine.SamplingSettings(seed=0, steps=3, cfg=4.5)
    placed = engine.Placed(net, torch.device("cpu"), torch.float32)
    with pytest.raises(CancelledError):
        engine.sample_latents(placed, conditions_for(plan, video=False), settings, Recording())
    total = plan.num_windows * 3
    groups = -(-plan.num_windows // engine.sampling.WINDOWS_PER_FORWARD)
    assert reports[0][1] == total and len(reports) == 2
    assert reports[0][0] == min(engine.sampling.WINDOWS_PER_FORWARD, plan.num_windows)
    assert groups >= 1


# ---- bounded memory ------------------------------------------------------------------------------------------
_MEMORY_SCRIPT = textwrap.dedent("""
    import ctypes, json, sys, torch
    sys.path.insert(0, {repo!r})
    from bench.measure import HostMemory
    from mmaudio import engine
    from tests.test_engine_windows import tiny_network, conditions_for
    from tests.test_decoder import make_decoder
    from mmaudio.engine.windows import plan_windows

    seconds = float(sys.argv[1])
    torch.set_num_threads(1)
    net, decoder = tiny_network(latent_dim=20), make_decoder("16k")
    memory = HostMemory()  # the peak from here on, not the process's (see tests/test_memory_estimates.py)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    memory.reset_peak()
    before = memory.current()
    runtime = engine.DirectRuntime()
    conditions = conditions_for(plan_windows(seconds, "16k"), video=False)
    latents = engine.sample_latents(engine.Placed(net, torch.device("cpu"), torch.float32), conditions,
                                    engine.SamplingSettings(seed=1, steps=2), runtime)
    wave = engine.decode_audio(engine.Placed(decoder, torch.device("cpu"), torch.float32), latents, runtime)
    print(json.dumps({{"samples": wave.shape[-1], "finite": bool(torch.isfinite(wave).all()),
                      "growth_kib": (memory.peak() - before) // 1024, "resettable": memory.resettable}}))
""")


def _peak_growth(seconds: float) -> dict:
    script = _MEMORY_SCRIPT.format(repo=str(REPO))
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}  # large blocks go back to the system when freed
    done = subprocess.run([sys.executable, "-c", script, str(seconds)], capture_output=True, text=True, cwd=REPO,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_ten_minute_text_only_soundtrack_runs_in_bounded_memory() -> None:
    """600 s of 16 kHz audio through windows and chunked decoding: the peak grows with the windows' small
    conditions and the output itself, not with the activations of the whole timeline."""
    short, long = _peak_growth(60.0), _peak_growth(600.0)
    assert long["samples"] == 600 * 16000 and long["finite"]
    # the measurement sees the run: at least the 10-minute waveform itself is resident at the end
    assert not long["resettable"] or long["growth_kib"] >= 600 * 16000 * 4 // 1024, long
    output_kib = 600 * 16000 * 4 * 3 // 1024  # the waveform, a copy while trimming and joining, and the latents' share
    assert long["growth_kib"] - short["growth_kib"] < output_kib + 64 * 1024, (short, long)
