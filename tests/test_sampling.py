"""Euler flow matching with classifier-free guidance: guidance paths, batching, conditioning modes, seeding."""

from __future__ import annotations

import pytest
import torch

from mmaudio import engine
from mmaudio.errors import InvalidInputError
from mmaudio.model import MMAudioNetwork, NetworkConfig, SequenceLengths, winograd
from mmaudio.sampling import (
    DEFAULT_CFG,
    build_conditions,
    euler_sample,
    flow_time_grid,
    guided_velocity,
    initial_noise,
    reference_noise,
    sample,
)
from tests.parity.cases import rel_l2

LENGTHS = SequenceLengths.for_duration(1.0, "44k")
B = 2


def _tiny_net(v2: bool = True, seed: int = 0) -> MMAudioNetwork:
    config = NetworkConfig(name="tiny", latent_dim=8, clip_dim=24, sync_dim=16, text_dim=20, hidden_dim=32, depth=3,
                           fused_depth=1, num_heads=2, v2=v2, mode="44k", text_seq_len=10,
                           latent_seq_len=LENGTHS.latent_seq_len, clip_seq_len=LENGTHS.clip_seq_len,
                           sync_seq_len=LENGTHS.sync_seq_len)
    net = MMAudioNetwork(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in net.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if name == "latent_std":
                param.copy_(0.5 + noise.abs())
            elif param.ndim >= 2:
                param.copy_(noise / param[0].numel() ** 0.5)
            else:
                param.copy_(0.1 * noise + (1.0 if "norm" in name else 0.0))
    return net


def _features(seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "clip_f": torch.randn(B, LENGTHS.clip_seq_len, 24, generator=gen),
        "sync_f": torch.randn(B, LENGTHS.sync_seq_len, 16, generator=gen),
        "text_f": torch.randn(B, 10, 20, generator=gen),
        "negative_text_f": torch.randn(B, 10, 20, generator=gen),
    }


class _CountingNet:
    """Records the batch size and t of every predict_flow call of a network."""

    def __init__(self, net: MMAudioNetwork, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, torch.Tensor]] = []
        original = net.predict_flow

        def counting(latent: torch.Tensor, t: torch.Tensor, conditions: object, *, branches: int = 1) -> torch.Tensor:
            self.calls.append((latent.shape[0] * branches, torch.as_tensor(t).clone()))
            return original(latent, t, conditions, branches=branches)

        monkeypatch.setattr(net, "predict_flow", counting)


@pytest.fixture(scope="module")
def net() -> MMAudioNetwork:
    return _tiny_net()


@torch.no_grad()
def test_cfg_below_one_runs_the_conditional_branch_only(net: MMAudioNetwork, monkeypatch: pytest.MonkeyPatch) -> None:
    feats = _features()
    conditions, empty = build_conditions(net, clip_f=feats["clip_f"], sync_f=feats["sync_f"], text_f=feats["text_f"])
    counter = _CountingNet(net, monkeypatch)
    x0 = initial_noise(3, B, net.latent_seq_len, net.latent_dim)
    x1 = sample(net, x0, conditions, empty, num_steps=4, cfg_strength=0.5)
    assert [batch for batch, _ in counter.calls] == [B] * 4
    counter.calls.clear()
    # without empty conditions at all
    assert torch.equal(sample(net, x0, conditions, None, num_steps=4, cfg_strength=0.5), x1)
    assert [batch for batch, _ in counter.calls] == [B] * 4


@torch.no_grad()
def test_cfg_runs_both_branches_in_one_batched_pass(net: MMAudioNetwork, monkeypatch: pytest.MonkeyPatch) -> None:
    feats = _features()
    conditions, empty = build_conditions(net, clip_f=feats["clip_f"], sync_f=feats["sync_f"], text_f=feats["text_f"],
                                         negative_text_f=feats["negative_text_f"])
    x0 = initial_noise(5, B, net.latent_seq_len, net.latent_dim)
    counter = _CountingNet(net, monkeypatch)
    batched = sample(net, x0, conditions, empty, num_steps=5, cfg_strength=4.5)
    assert [batch for batch, _ in counter.calls] == [2 * B] * 5
    counter.calls.clear()
    separate = sample(net, x0, conditions, empty, num_steps=5, cfg_strength=4.5, batched_cfg=False)
    assert [batch for batch, _ in counter.calls] == [B] * 10
    assert rel_l2(batched, separate) <= 1e-5


@torch.no_grad()
def test_batched_velocity_equals_two_passes(net: MMAudioNetwork) -> None:
    feats = _features(7)
    conditions, empty = build_conditions(net, clip_f=feats["clip_f"], sync_f=feats["sync_f"], text_f=feats["text_f"])
    x = torch.randn(B, net.latent_seq_len, net.latent_dim)
    t = torch.tensor(0.36)
    cond = net.predict_flow(x, t, conditions)
    uncond = net.predict_flow(x, t, empty)
    expected = 4.5 * cond + (1 - 4.5) * uncond
    for velocity in (guided_velocity(net, conditions, empty, 4.5), lambda t, x: net.ode_wrapper(t, x, conditions,
                                                                                                empty, 4.5)):
        assert rel_l2(velocity(t, x), expected) <= 1e-5


def test_guidance_needs_empty_conditions(net: MMAudioNetwork) -> None:
    feats = _features()
    conditions, _ = build_conditions(net, clip_f=feats["clip_f"], sync_f=feats["sync_f"], text_f=feats["text_f"])
    velocity = guided_velocity(net, conditions, None, 4.5)
    with pytest.raises(ValueError, match="empty"), torch.no_grad():
        velocity(torch.tensor(0.0), torch.randn(B, net.latent_seq_len, net.latent_dim))


@torch.no_grad()
def test_time_grid_and_steps(net: MMAudioNetwork, monkeypatch: pytest.MonkeyPatch) -> None:
    grid = flow_time_grid(25)
    assert grid.dtype == torch.float32 and grid[0] == 0 and grid[-1] == 1
    assert torch.equal(grid, torch.linspace(0, 1, 26))
    feats = _features()
    conditions, empty = build_conditions(net, clip_f=feats["clip_f"], sync_f=feats["sync_f"], text_f=feats["text_f"])
    counter = _CountingNet(net, monkeypatch)
    sample(net, initial_noise(0, B, net.latent_seq_len, 8), conditions, empty, num_steps=6, cfg_strength=2.0)
    seen = [t[0].item() for _, t in counter.calls]
    assert seen == flow_time_grid(6)[:-1].tolist()  # never evaluated at t = 1
    assert all(t.dtype == torch.float32 for _, t in counter.calls)


def test_euler_integrates_the_grid_exactly() -> None:
    x0 = torch.zeros(1, 3, 2)
    x1 = euler_sample(lambda t, x: torch.ones_like(x), x0, 7)
    grid = flow_time_grid(7)
    expected = torch.zeros(())
    for k in range(7):
        expected = expected + (grid[k + 1] - grid[k])
    assert torch.equal(x1, torch.full_like(x0, expected.item()))


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_bad_step_counts_are_rejected(steps: object) -> None:
    with pytest.raises(InvalidInputError, match=r"steps: expected a whole number of at least 1, got"):
        engine.SamplingSettings(steps=steps)  # type: ignore[arg-type]


def test_bad_cfg_is_rejected(net: MMAudioNetwork) -> None:
    feats = _features()
    conditions, empty = build_conditions(net, text_f=feats["text_f"])
    with pytest.raises(InvalidInputError, match="cfg"):
        guided_velocity(net, conditions, empty, float("nan"))


@torch.no_grad()
def test_callback_reports_progress_and_can_abort(net: MMAudioNetwork) -> None:
    feats = _features()
    conditions, empty = build_conditions(net, clip_f=feats["clip_f"], sync_f=feats["sync_f"], text_f=feats["text_f"])
    seen: list[tuple[int, int]] = []
    states: list[torch.Tensor] = []

    def progress(step: int, total: int, x: torch.Tensor) -> None:
        seen.append((step, total))
        states.append(x)

    x1 = sample(net, initial_noise(0, B, net.latent_seq_len, 8), conditions, empty, num_steps=5, callback=progress)
    assert seen == [(k, 5) for k in range(5)]
    assert torch.equal(states[-1], x1)

    class StopSamplingError(Exception):
        pass

    def interrupt(step: int, total: int, x: torch.Tensor) -> None:
        if step == 1:
            raise StopSamplingError

    with pytest.raises(StopSamplingError):
        sample(net, initial_noise(0, B, net.latent_seq_len, 8), conditions, empty, num_steps=5, callback=interrupt)


@torch.no_grad()
def test_conditioning_modes_use_the_learned_empty_features(net: MMAudioNetwork) -> None:
    feats = _features()
    video = build_conditions(net, clip_f=feats["clip_f"], sync_f=feats["sync_f"], text_f=feats["text_f"])[0]
    masked, empty = build_conditions(net, clip_f=feats["clip_f"], sync_f=feats["sync_f"], text_f=feats["text_f"],
                                     mask_away_clip=True)
    text_only = build_conditions(net, text_f=feats["text_f"])[0]
    # mask_away_clip: learned empty CLIP features, real Synchformer features
    assert rel_l2(masked.clip_f, empty.clip_f) <= 1e-6
    assert torch.equal(masked.sync_f, video.sync_f)
    assert rel_l2(masked.sync_f, empty.sync_f) > 0.1
    # text only: both video streams empty, the text is the prompt's
    assert rel_l2(text_only.clip_f, empty.clip_f) <= 1e-6 and rel_l2(text_only.sync_f, empty.sync_f) <= 1e-6
    assert torch.equal(text_only.text_f, video.text_f)
    assert text_only.batch_size == B


@torch.no_grad()
def test_negative_prompt_replaces_the_empty_string(net: MMAudioNetwork) -> None:
    feats = _features()
    _, plain = build_conditions(net, text_f=feats["text_f"])
    _, negative = build_conditions(net, text_f=feats["text_f"], negative_text_f=feats["negative_text_f"])
    assert not torch.allclose(plain.text_f, negative.text_f)
    assert torch.equal(plain.clip_f, negative.clip_f)
    expected = net.preprocess_conditions(net.get_empty_clip_sequence(B), net.get_empty_sync_sequence(B),
                                         feats["negative_text_f"])
    assert rel_l2(negative.text_f, expected.text_f) <= 1e-6
    # one negative prompt for every sample of the batch
    _, single = build_conditions(net, text_f=feats["text_f"], negative_text_f=feats["negative_text_f"][:1])
    assert single.text_f.shape[0] == B and rel_l2(single.text_f[1], negative.text_f[0]) <= 1e-6
    with pytest.raises(InvalidInputError, match="negative"):
        net.get_empty_conditions(3, feats["negative_text_f"])


def test_noise_comes_from_per_sample_cpu_generators() -> None:
    shape = (LENGTHS.latent_seq_len, 8)
    a = initial_noise(42, 3, *shape)
    assert torch.equal(a, initial_noise(42, 3, *shape))
    assert torch.equal(a[1:2], initial_noise(43, 1, *shape))
    assert torch.equal(a[2:3], initial_noise(44, 1, *shape))
    assert not torch.equal(a[0], a[1])
    # batch 1 is the reference's draw: torch.randn(1, L, C, generator=Generator("cpu").manual_seed(seed))
    expected = torch.randn(1, *shape, generator=torch.Generator("cpu").manual_seed(42))
    assert torch.equal(initial_noise(42, 1, *shape), expected)
    assert torch.equal(reference_noise(42, (1, *shape)), expected)
    # the largest ComfyUI seed wraps to 0 for the next sample instead of failing
    top = initial_noise(2**64 - 1, 2, *shape)
    assert torch.equal(top[1:], initial_noise(0, 1, *shape))
    assert initial_noise(1, 1, *shape, dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(InvalidInputError, match="seed"):
        initial_noise(1.5, 1, *shape)  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_noise_is_the_same_on_cuda() -> None:
    cpu = initial_noise(7, 2, 44, 8)
    assert torch.equal(initial_noise(7, 2, 44, 8, device="cuda").cpu(), cpu)


def _encoded(feats: dict[str, torch.Tensor], prompt: str = "rain") -> engine.EncodedConditions:
    """One-pass conditions of a 1 s clip, as the encode stage hands them over: the clip's features once (one
    window, shared by every prompt row), one text per prompt row."""
    prompts = engine.parse_prompts(prompt)
    rows = prompts.num_rows
    return engine.EncodedConditions(
        windows=engine.WindowPlan(duration=1.0, mode=None, total_latents=0, window_latents=0, starts=(0,)),
        clip_features=feats["clip_f"][:1], sync_features=feats["sync_f"][:1], text_features=feats["text_f"][:rows],
        text_index=torch.arange(rows).view(rows, 1), negative_features=None,
        negative_index=torch.full((rows, 1), -1), prompts=prompts, source="video")


@torch.no_grad()
def test_sample_latents_is_seeded_and_per_sample(net: MMAudioNetwork) -> None:
    feats = _features()
    conditions = _encoded(feats)
    placed = engine.Placed(net, torch.device("cpu"), torch.float32)

    def run(seed: int, samples: int, on: engine.EncodedConditions = conditions) -> engine.AudioLatents:
        return engine.sample_latents(placed, on, engine.SamplingSettings(seed=seed, steps=3, samples=samples),
                                     engine.DirectRuntime("cpu"))

    first = run(11, 2)
    assert first.latents.shape == (2, net.latent_seq_len, net.latent_dim) and first.latents.dtype == torch.float32
    assert first.seeds == (11, 12) and first.prompts == ("rain", "rain") and first.mode == "44k"
    assert first.duration == 1.0
    assert torch.equal(first.latents, run(11, 2).latents)
    assert not torch.equal(first.latents[0], first.latents[1])  # two samples, two draws
    # sample 1 of seed 11 is sample 0 of seed 12 given the same conditions
    second = run(12, 1)
    assert second.seeds == (12,)
    assert rel_l2(first.latents[1:], second.latents) <= 1e-5
    # every prompt row draws the same noise: seed 11 for sample 0 of both lines
    lines = run(11, 1, _encoded(feats, "rain\nthunder"))
    assert lines.seeds == (11, 11) and lines.prompts == ("rain", "thunder")
    assert rel_l2(lines.latents[:1], first.latents[:1]) <= 1e-5
    # the result is the guided Euler trajectory from the seeded noise, unnormalised with the network's statistics
    x0 = initial_noise(11, 2, net.latent_seq_len, net.latent_dim)
    cond, empty = build_conditions(net, clip_f=feats["clip_f"][:1], sync_f=feats["sync_f"][:1],
                                   text_f=feats["text_f"][:1], batch_size=2)
    with winograd.fast_path_for(net, "cpu", torch.float32):
        x1 = sample(net, x0, cond, empty, num_steps=3, cfg_strength=DEFAULT_CFG)
    assert rel_l2(first.latents, x1 * net.latent_std + net.latent_mean) <= 1e-6
    assert rel_l2(net.normalize(first.latents), x1) <= 1e-5


def test_device_tables_are_released_after_sampling_even_when_interrupted() -> None:
    net = _tiny_net()
    feats = _features()
    cond, empty = build_conditions(net, clip_f=feats["clip_f"], sync_f=feats["sync_f"], text_f=feats["text_f"])
    x0 = initial_noise(0, B, net.latent_seq_len, net.latent_dim)
    seen: list[int] = []

    def probe(k: int, total: int, x: torch.Tensor) -> None:
        # during sampling the tables are cached for the compute device ...
        seen.append(len(net._rotary._on_device) + len(net.t_embed._freqs_on_device))
        if k == 1:
            raise KeyboardInterrupt  # ... and an interrupt mid-way must not leave them behind

    with pytest.raises(KeyboardInterrupt):
        sample(net, x0, cond, empty, num_steps=4, callback=probe)
    assert seen and seen[0] > 0
    assert not net._rotary._on_device and not net.t_embed._freqs_on_device
    sample(net, x0, cond, empty, num_steps=2)
    assert not net._rotary._on_device and not net.t_embed._freqs_on_device
