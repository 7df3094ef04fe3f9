"""Audio as input to the sampler: denoise strength, regenerating a time range, extending a soundtrack."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mmaudio import engine
from mmaudio.engine.audio import regenerate_mask
from mmaudio.engine.latents import RegenerateRange
from mmaudio.engine.windows import plan_windows
from mmaudio.errors import IncompatibleComponentsError, InvalidInputError
from mmaudio.modes import MODES
from mmaudio.sampling import flow_time_grid, state_at
from tests.test_decoder import make_decoder
from tests.test_engine_windows import conditions_for, one_pass, tiny_network

RATE = MODES["16k"].latent_rate  # 31.25 latent frames per second


def _net():
    return tiny_network(latent_dim=20, seed=1)


def _source(frames: int, seed: int = 7) -> engine.AudioLatents:
    latents = torch.randn(1, frames, 20, generator=torch.Generator().manual_seed(seed))
    return engine.AudioLatents(latents=latents, mode="16k", duration=frames / RATE, seeds=(), prompts=("input",))


def _sample(net, conditions, source=None, *, denoise=1.0, steps=3, seed=4):
    settings = engine.SamplingSettings(seed=seed, steps=steps, cfg=4.5, denoise=denoise)
    placed = engine.Placed(net, torch.device("cpu"), torch.float32)
    return engine.sample_latents(placed, conditions, settings, engine.DirectRuntime(), source).latents


# ---- the flow's start -------------------------------------------------------------------------------------------
def test_denoise_takes_the_last_steps_of_a_finer_grid_and_starts_on_the_straight_path() -> None:
    assert torch.equal(flow_time_grid(4), torch.linspace(0, 1, 5))
    assert torch.equal(flow_time_grid(4, 0.5), torch.linspace(0, 1, 9)[4:])  # as ComfyUI's KSampler: 8 steps, last 4
    assert flow_time_grid(3, 0.3).numel() == 4 and float(flow_time_grid(3, 0.3)[0]) == pytest.approx(0.7)
    noise, data = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    assert torch.equal(state_at(torch.tensor(0.0), noise, data), noise)
    assert torch.equal(state_at(torch.tensor(1.0), noise, data), data)
    assert torch.allclose(state_at(torch.tensor(0.25), noise, data), 0.75 * noise + 0.25 * data)


def test_denoise_one_equals_plain_generation_and_zero_returns_the_input() -> None:
    net = _net()
    conditions = conditions_for(one_pass(8.0), seed=2)
    source = _source(250)
    plain = _sample(net, conditions)
    assert torch.equal(_sample(net, conditions, source, denoise=1.0), plain)
    assert torch.equal(_sample(net, conditions, source, denoise=0.0), source.latents)
    partial = _sample(net, conditions, source, denoise=0.4)
    assert not torch.equal(partial, plain) and not torch.equal(partial, source.latents)


def test_input_a_frame_or_two_short_of_the_soundtrack_is_held_not_refused() -> None:
    net = _net()
    conditions = conditions_for(one_pass(8.0), seed=2)
    kept = _sample(net, conditions, _source(249), denoise=0.0)
    assert kept.shape == (1, 250, 20) and torch.equal(kept[:, 249], kept[:, 248])
    with pytest.raises(InvalidInputError, match=r"input audio covers 7\.68 s but the soundtrack is 8 s"):
        _sample(net, conditions, _source(240))


@pytest.mark.parametrize("windowed", [False, True])
def test_regenerating_a_range_keeps_the_rest_exactly(windowed: bool) -> None:
    net = _net()
    plan = plan_windows(20.0, "16k") if windowed else one_pass(8.0)
    total = plan.total_latents if windowed else 250
    conditions = conditions_for(plan, seed=3)
    source = _source(total)
    start, end, fade = 3.0, 5.0, 0.5
    ranged = dataclasses.replace(source, regenerate=RegenerateRange(start, end, fade))
    out = _sample(net, conditions, ranged)
    first, last = round(start * RATE), round(end * RATE)
    assert torch.equal(out[:, :first], source.latents[:, :first])
    assert torch.equal(out[:, last:], source.latents[:, last:])
    inner = slice(first + round(fade * RATE), last - round(fade * RATE))
    assert not torch.allclose(out[:, inner], source.latents[:, inner], atol=1e-3)


def test_extension_keeps_the_soundtrack_and_generates_past_its_end() -> None:
    net = _net()
    conditions = conditions_for(one_pass(8.0), seed=5)
    short = dataclasses.replace(_source(125), regenerate=RegenerateRange(4.0, None, 0.25))  # 4 s of an 8 s clip
    out = _sample(net, conditions, short)
    assert out.shape == (1, 250, 20)
    assert torch.equal(out[:, :125], short.latents)
    assert bool(torch.isfinite(out).all()) and not torch.equal(out[:, 125:], torch.zeros_like(out[:, 125:]))


def test_the_mask_has_soft_edges_inside_the_range() -> None:
    mask = regenerate_mask(RegenerateRange(2.0, 4.0, 0.5), 250, 250, "16k", 8.0)
    first, last, ramp = round(2 * RATE), round(4 * RATE), round(0.5 * RATE)
    assert bool((mask[:first] == 0).all()) and bool((mask[last:] == 0).all())
    assert bool((mask[first + ramp:last - ramp] == 1).all())
    rise = mask[first:first + ramp]
    assert bool((rise > 0).all()) and bool((rise < 1).all()) and bool((rise.diff() > 0).all())
    assert torch.allclose(mask[last - ramp:last], rise.flip(0))


@pytest.mark.parametrize("source_frames, regenerate, denoise, message", [
    (250, RegenerateRange(9.0, 10.0), 1.0, r"start: 9 s is at or after the end of the 8 s soundtrack"),
    (250, RegenerateRange(2.0, 9.0), 1.0, r"end: 9 s is after the end of the 8 s soundtrack"),
    (125, RegenerateRange(2.0, 6.0), 1.0, r"end: the input audio covers 4\.00 s, but the range to regenerate ends"),
    (125, RegenerateRange(5.0, None), 1.0, r"start: 5 s is after the end of the input audio \(4\.00 s\)"),
    (125, RegenerateRange(3.0, None), 0.5, r"denoise: 0\.5 keeps part of the input everywhere, but the soundtrack"),
    (125, None, 1.0, r"to extend it, regenerate from 4\.00 s to the end"),
])
def test_bad_ranges_name_what_was_expected(source_frames: int, regenerate: RegenerateRange | None, denoise: float,
                                           message: str) -> None:
    net = _net()
    source = dataclasses.replace(_source(source_frames), regenerate=regenerate)
    with pytest.raises(InvalidInputError, match=message):
        _sample(net, conditions_for(one_pass(8.0)), source, denoise=denoise)


def test_bad_inputs_are_refused_before_sampling() -> None:
    net = _net()
    conditions = conditions_for(one_pass(8.0))
    with pytest.raises(InvalidInputError, match=r"denoise: 0\.5 needs input audio to start from"):
        _sample(net, conditions, None, denoise=0.5)
    with pytest.raises(InvalidInputError, match="denoise: expected a number from 0 to 1"):
        engine.SamplingSettings(denoise=1.5)
    foreign = engine.AudioLatents(latents=torch.zeros(1, 345, 40), mode="44k", duration=8.0, seeds=(), prompts=())
    with pytest.raises(IncompatibleComponentsError, match=r"encoded for 44\.1 kHz but the network is a 16 kHz"):
        _sample(net, conditions, foreign)
    broken = _source(250)
    broken.latents[0, 3, 0] = float("nan")
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        _sample(net, conditions, broken)
    with pytest.raises(InvalidInputError, match=r"fade: 1 s at each edge needs a range of at least 2 s"):
        RegenerateRange(1.0, 2.0, 1.0)
    with pytest.raises(InvalidInputError, match="end: expected seconds after start"):
        RegenerateRange(3.0, 2.0)


def _sampled(net, conditions, source) -> engine.AudioLatents:
    settings = engine.SamplingSettings(seed=4, steps=3, cfg=4.5)
    placed = engine.Placed(net, torch.device("cpu"), torch.float32)
    return engine.sample_latents(placed, conditions, settings, engine.DirectRuntime(), source)


@pytest.mark.parametrize("frames, regenerate", [(250, RegenerateRange(4.0, 5.0, 0.2)),
                                                (125, RegenerateRange(4.0, None, 0.2))])
def test_decoded_audio_outside_the_range_is_the_inputs_round_trip(frames: int, regenerate: RegenerateRange) -> None:
    """Where frames were kept, the sound is exactly the input's own decoding: the decoder's global attention does
    not let the new part leak into it. Inside, it is the new latents' decoding; the soft edges cross-fade."""
    net, decoder = _net(), make_decoder("16k", seed=3)
    source = dataclasses.replace(_source(frames, seed=11), regenerate=regenerate)
    latents = _sampled(net, conditions_for(one_pass(8.0), seed=6), source)
    placed = engine.Placed(decoder, torch.device("cpu"), torch.float32)
    wave = engine.decode_audio(placed, latents, engine.DirectRuntime())[0, 0]
    with torch.no_grad():
        round_trip = decoder.decode(source.latents, num_samples=min(8 * 16000, frames * 512))[0, 0]
        plain_new = decoder.decode(latents.latents, duration=8.0)[0, 0]
    per_second = 16000
    start = int(regenerate.start * per_second)
    assert wave.shape == (8 * per_second,)
    assert torch.equal(wave[:start], round_trip[:start])
    if regenerate.end is not None:
        end = int(regenerate.end * per_second)
        assert torch.equal(wave[end:], round_trip[end:])
        inner = slice(int((regenerate.start + regenerate.fade) * per_second), int((regenerate.end - regenerate.fade)
                                                                                  * per_second))
    else:
        inner = slice(int((regenerate.start + regenerate.fade) * per_second), None)
    assert torch.equal(wave[inner], plain_new[inner])
    if regenerate.end is not None:  # an extension has no input audio there to differ from
        assert not torch.equal(wave[inner], round_trip[inner])
