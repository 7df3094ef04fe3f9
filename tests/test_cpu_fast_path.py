"""The CPU fast path of the flow network: Winograd F(4, 3) convolutions and adaLN on distinct sync rows.

Both change only the order of float32 arithmetic, so each is checked in float64 (where the algorithm must agree
with the plain convolution to ~1e-15, proving it exact) and in float32 (where the difference must stay at
rounding level), plus the one switch that turns the Winograd path on (``winograd.fast_path_for``), the layers it
applies to, and the life of its filters.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmaudio.model import winograd
from mmaudio.model.conditions import NetworkConditions, distinct_rows
from mmaudio.model.layers import SwiGLU, channel_last_conv1d
from mmaudio.ops import default_ops
from mmaudio.sampling import build_conditions, initial_noise, sample
from tests.parity.cases import rel_l2
from tests.tiny_network import LATENT_DIM, LENGTHS, random_features, tiny_network


def _plain_conv3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return F.conv1d(x.transpose(1, 2), weight, bias, padding=1).transpose(1, 2)


def _plain_swiglu(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
    return _plain_conv3(F.silu(_plain_conv3(x, w1)) * _plain_conv3(x, w3), w2)


def _weights(*shape: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) / (shape[1] * shape[2]) ** 0.5).to(dtype)


# ---- the algorithm -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 7, 64, 250, 251])
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv3_equals_the_convolution_in_float64(length: int, with_bias: bool) -> None:
    x = torch.randn(3, length, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(length))
    weight = _weights(10, 12, 3, dtype=torch.float64, seed=1)
    bias = torch.randn(10, dtype=torch.float64) if with_bias else None
    out = winograd.conv3(x, winograd.filter_tiles(weight), bias)
    assert out.shape == (3, length, 10)
    assert rel_l2(out, _plain_conv3(x, weight, bias)) < 1e-13


@pytest.mark.parametrize("length", [1, 2, 3, 5, 6, 64, 250, 345])
def test_swiglu3_equals_the_plain_mlp_in_float64(length: int) -> None:
    x = torch.randn(2, length, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(length))
    w1, w3 = _weights(24, 16, 3, dtype=torch.float64, seed=2), _weights(24, 16, 3, dtype=torch.float64, seed=3)
    w2 = _weights(16, 24, 3, dtype=torch.float64, seed=4)
    out = winograd.swiglu3(x, *winograd.swiglu_filters(w1, w2, w3))
    assert rel_l2(out, _plain_swiglu(x, w1, w2, w3)) < 1e-13


def test_float32_differences_stay_near_rounding_level_on_a_real_width() -> None:
    """small_16k's MLP (448 -> 1280 -> 448) over both guidance branches of an 8 s clip: within a few times the
    plain convolution's own float32 error.

    Both errors are measured against float64 on the same inputs. The plain path's error depends on the CPU's
    kernels (3.2e-7 with AVX-512, 1.5e-6 with AVX2 on the same machine), so it is the yardstick, not a number.
    """
    x = torch.randn(2, 250, 448, generator=torch.Generator().manual_seed(0))
    w1, w3 = _weights(1280, 448, 3, dtype=torch.float32, seed=5), _weights(1280, 448, 3, dtype=torch.float32, seed=6)
    w2 = _weights(448, 1280, 3, dtype=torch.float32, seed=7)
    exact = _plain_swiglu(x.double(), w1.double(), w2.double(), w3.double())
    fast = rel_l2(winograd.swiglu3(x, *winograd.swiglu_filters(w1, w2, w3)).double(), exact)
    plain = rel_l2(_plain_swiglu(x, w1, w2, w3).double(), exact)
    # The yardstick is float32 rounding: non-zero, and within sqrt(longest reduction) units of float32 epsilon
    # (the usual statistical bound for sums of rounded products; any float32 kernel stays far inside it).
    longest_reduction = 1280 * 3
    assert 0 < plain < longest_reduction**0.5 * torch.finfo(torch.float32).eps
    assert fast < 8 * plain


def test_non_contiguous_input() -> None:
    x = torch.randn(12, 9, 2, dtype=torch.float64).permute(2, 1, 0)  # [2, 9, 12], strided
    weight = _weights(5, 12, 3, dtype=torch.float64, seed=8)
    assert rel_l2(winograd.conv3(x, winograd.filter_tiles(weight)), _plain_conv3(x, weight)) < 1e-13


def test_filters_beyond_the_budget_keep_the_plain_convolution(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second, x = _mlp(seed=0), _mlp(seed=1), torch.randn(1, 9, 16)
    one_mlp = 2 * sum(layer.weight.numel() * 4 for layer in (first.w1, first.w2, first.w3))  # F(4, 3): 6/3
    held_before = winograd.held_filter_bytes()  # other live modules of this test session may hold some
    monkeypatch.setattr(winograd, "FILTER_BUDGET_BYTES", held_before + one_mlp + 10)
    plain = second(x).detach()
    calls = _count_fast_calls(monkeypatch)
    with torch.no_grad(), _fast(first), _fast(second):
        first(x)
        assert winograd.held_filter_bytes() == held_before + one_mlp and len(calls) == 1
        out = second(x)  # does not fit: plain path, nothing held
        assert winograd.held_filter_bytes() == held_before + one_mlp and len(calls) == 1
    assert torch.equal(out, plain)
    assert winograd.held_filter_bytes() == held_before


def test_leaving_the_switch_restores_plain_layers_and_drops_the_filters_even_after_an_error() -> None:
    mlp = _mlp()
    held_before = winograd.held_filter_bytes()
    with pytest.raises(KeyboardInterrupt), torch.no_grad(), _fast(mlp):
        mlp(torch.randn(1, 5, 16))
        assert winograd.held_filter_bytes() > held_before and "forward" in vars(mlp)
        raise KeyboardInterrupt
    assert winograd.held_filter_bytes() == held_before
    assert "forward" not in vars(mlp)  # the class forward again


def test_filter_tiles_rejects_other_kernels() -> None:
    with pytest.raises(ValueError, match=r"kernel-3 Conv1d weight"):
        winograd.filter_tiles(torch.zeros(4, 4, 5))


# ---- when the layers take it ---------------------------------------------------------------------------------
def _mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> SwiGLU:
    torch.manual_seed(seed)
    return SwiGLU(16, 96, default_ops(), kernel_size=3, per_step=True).to(dtype)


def _fast(module: torch.nn.Module, dtype: torch.dtype = torch.float32):
    return winograd.fast_path_for(module, "cpu", dtype)


def _count_fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = winograd.swiglu3

    def counting(*args: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(winograd, "swiglu3", counting)
    return calls


def test_mlp_takes_the_fast_path_for_cpu_float32_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    mlp, x = _mlp(), torch.randn(2, 11, 16)
    calls = _count_fast_calls(monkeypatch)
    with torch.no_grad():
        plain = mlp(x)  # outside the switch: the plain layer
        assert calls == []
        with _fast(mlp):
            fast = mlp(x)
        assert len(calls) == 1
        with winograd.use_winograd(False), _fast(mlp):
            assert torch.equal(mlp(x), plain)
        assert len(calls) == 1
    assert winograd.winograd_enabled()
    assert rel_l2(fast, plain) < 1e-5


@pytest.mark.parametrize("case", ["grad", "bf16", "kernel1", "not_reused", "patched"])
def test_mlp_keeps_the_plain_path(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_fast_calls(monkeypatch)
    mlp = _mlp(dtype=torch.bfloat16 if case == "bf16" else torch.float32)
    if case == "kernel1":
        mlp = SwiGLU(16, 96, default_ops(), kernel_size=1, per_step=True)
    if case == "not_reused":
        mlp = SwiGLU(16, 96, default_ops(), kernel_size=3)
    if case == "patched":  # a ComfyUI layer with a weight patch applied per call
        mlp.w1.weight_function = [lambda w: w]
    dtype = torch.bfloat16 if case == "bf16" else torch.float32
    x = torch.randn(1, 5, 16, dtype=dtype)
    with _fast(mlp, dtype):
        if case == "grad":
            mlp(x).sum().backward()
        else:
            with torch.no_grad():
                mlp(x)
    assert calls == []


def test_cached_filters_follow_weight_changes_and_are_released() -> None:
    mlp, x = _mlp(), torch.randn(1, 9, 16)
    held = winograd.held_filter_bytes()
    with torch.no_grad():
        with _fast(mlp):
            before = mlp(x)
            assert winograd.held_filter_bytes() > held
            mlp.w2.weight.mul_(2.0)  # in place: a new version of the same storage
            after = mlp(x)
        plain = mlp(x)
    assert rel_l2(after, 2 * before) < 1e-5
    assert rel_l2(after, plain) < 1e-5
    assert winograd.held_filter_bytes() == held


def test_inference_tensor_weights_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """ComfyUI loads weights under inference mode: such tensors have no version counter."""
    with torch.inference_mode():
        mlp = _mlp()
        for layer in (mlp.w1, mlp.w2, mlp.w3):
            layer.weight = torch.nn.Parameter(layer.weight.detach().clone(), requires_grad=False)
    assert mlp.w1.weight.is_inference()
    calls = _count_fast_calls(monkeypatch)
    x = torch.randn(1, 7, 16)
    with torch.inference_mode():
        with _fast(mlp):
            fast = mlp(x)
            again = mlp(x)
        plain = mlp(x)
    assert len(calls) == 2 and torch.equal(fast, again)
    assert rel_l2(fast, plain) < 1e-5


def test_channel_last_conv_with_bias_takes_the_fast_path() -> None:
    torch.manual_seed(0)
    conv = channel_last_conv1d(default_ops(), 8, 6, 3, per_step=True)
    x = torch.randn(2, 7, 8)
    held = winograd.held_filter_bytes()
    with torch.no_grad():
        with _fast(conv):
            fast = conv(x)
            assert winograd.held_filter_bytes() > held
        plain = conv(x)
    assert rel_l2(fast, plain) < 1e-5 and not torch.equal(fast, plain)
    assert winograd.held_filter_bytes() == held


# ---- distinct sync rows ----------------------------------------------------------------------------------------
def test_distinct_rows_rebuild_the_sequence_per_sample() -> None:
    base = torch.randn(2, 5, 4)
    sequence = base[:, torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 4])]  # [2, 9, 4], repeats inside each sample
    sequence[1, 4] = sequence[0, 0]  # equal values in different samples stay separate rows
    found = distinct_rows(sequence)
    assert found.index.shape == (2, 9)
    assert torch.equal(found.rows[found.index], sequence)
    assert found.rows.shape[0] == 5 + 6
    assert torch.equal(found.sample, torch.tensor([0] * 5 + [1] * 6))


def test_projected_sync_rows_repeat_and_the_empty_video_has_few() -> None:
    net = tiny_network()
    with torch.no_grad():
        cond, empty = build_conditions(net, **random_features(1))
    cond_rows, empty_rows = cond.distinct_sync_rows(), empty.distinct_sync_rows()
    assert cond_rows is not None and empty_rows is not None
    assert cond_rows.rows.shape[0] <= LENGTHS.sync_seq_len < LENGTHS.latent_seq_len
    assert empty_rows.rows.shape[0] < 30  # 8 positions per segment plus the convolutions' edges
    assert cond.expand(1) is cond  # the sampler keeps the object, and with it the rows


def test_all_distinct_rows_are_not_deduplicated() -> None:
    sequence = torch.randn(1, 6, 4)
    cond = NetworkConditions(clip_f=torch.zeros(1, 2, 4), sync_f=sequence, text_f=torch.zeros(1, 3, 4),
                      clip_f_c=torch.zeros(1, 4), text_f_c=torch.zeros(1, 4))
    assert cond.distinct_sync_rows() is None


def test_sampling_is_unchanged_by_the_fast_path_and_leaves_no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    net = tiny_network()
    features = random_features(2, batch=2)
    x0 = initial_noise(3, 2, LENGTHS.latent_seq_len, LATENT_DIM)

    def run() -> torch.Tensor:
        with torch.no_grad():
            cond, empty = build_conditions(net, **features)
            return sample(net, x0, cond, empty, num_steps=4, cfg_strength=4.5)

    held = winograd.held_filter_bytes()
    with _fast(net):
        fast = run()
    assert winograd.held_filter_bytes() == held
    monkeypatch.setattr("mmaudio.model.conditions.DISTINCT_ROWS_WORTHWHILE", 0.0)
    plain = run()
    assert rel_l2(fast, plain) < 1e-5
    assert not torch.equal(fast, plain)  # the fast path really ran


def test_expected_filter_bytes_match_what_sampling_holds() -> None:
    """What a memory manager is told in advance equals what the caches hold during a generation."""
    net = tiny_network()
    expected = winograd.expected_filter_bytes(net, "cpu", torch.float32)
    assert expected > 0
    assert winograd.expected_filter_bytes(net, "cpu", torch.bfloat16) == 0
    assert winograd.expected_filter_bytes(net, "cuda", torch.float32) == 0
    held: list[int] = []
    before = winograd.held_filter_bytes()
    with torch.no_grad(), _fast(net):
        cond, empty = build_conditions(net, **random_features(3))
        x0 = initial_noise(1, 1, LENGTHS.latent_seq_len, LATENT_DIM)
        sample(net, x0, cond, empty, num_steps=2, cfg_strength=4.5,
               callback=lambda _k, _n, _x: held.append(winograd.held_filter_bytes() - before))
    assert held[0] == expected
    assert winograd.held_filter_bytes() == before  # released after the generation
