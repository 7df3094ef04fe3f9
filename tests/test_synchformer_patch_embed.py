"""The Synchformer's tubelet embedding as a reshape and a matmul instead of a Conv3d (Apple MPS has none).

Errors are measured against a float64 ``conv3d`` of the same (already rounded) inputs, and compared with the error
of the plain ``conv3d`` in the same dtype on this CPU: the yardstick is the convolution's own rounding, whatever
kernels this machine's CPU uses.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmaudio.errors import InvalidInputError
from mmaudio.features.synchformer import MotionFormerConfig, TubeletEmbed, tubelet_conv_class, tubelet_matmul
from mmaudio.ops import default_ops
from tests.parity.cases import rel_l2

KERNEL = (2, 16, 16)


def _case(shape: tuple[int, ...], dim: int, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen) * 2 - 1
    weight = torch.randn(dim, shape[1], *KERNEL, generator=gen) / (shape[1] * 2 * 16 * 16) ** 0.5
    bias = torch.randn(dim, generator=gen)
    return x.to(dtype), weight.to(dtype), bias.to(dtype)


def _errors(ours: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
            ) -> tuple[float, float]:
    """rel_l2 vs float64 of ``ours`` and of the plain conv3d in the inputs' dtype."""
    exact = F.conv3d(x.double(), weight.double(), None if bias is None else bias.double(), stride=KERNEL)
    plain = F.conv3d(x, weight, bias, stride=KERNEL)
    assert ours.shape == plain.shape and ours.dtype == plain.dtype
    return rel_l2(ours.double(), exact), rel_l2(plain.double(), exact)


def _assert_at_rounding_level(ours_err: float, plain_err: float, dtype: torch.dtype) -> None:
    # A few times the convolution's own error; the format's epsilon is the floor of that yardstick (a kernel that
    # happened to be exact on one input must not make the bound meaningless).
    assert ours_err <= 4 * max(plain_err, torch.finfo(dtype).eps)


@pytest.mark.parametrize("shape", [
    (2, 3, 16, 224, 224),  # the model's segments
    (3, 3, 5, 37, 35),  # odd sizes: the last frame and pixels that fill no tubelet are dropped, as by the conv
    (1, 3, 2, 16, 16),  # a single tubelet
])
def test_equals_conv3d_in_float32(shape: tuple[int, ...]) -> None:
    x, weight, bias = _case(shape, 48, torch.float32, seed=sum(shape))
    ours = tubelet_matmul(x, weight, bias)
    ours_err, plain_err = _errors(ours, x, weight, bias)
    _assert_at_rounding_level(ours_err, plain_err, torch.float32)


def test_without_bias() -> None:
    x, weight, _ = _case((2, 3, 4, 32, 48), 16, torch.float32, seed=1)
    ours_err, plain_err = _errors(tubelet_matmul(x, weight, None), x, weight, None)
    _assert_at_rounding_level(ours_err, plain_err, torch.float32)


def test_bf16_input() -> None:
    x, weight, bias = _case((2, 3, 6, 48, 40), 32, torch.bfloat16, seed=2)
    ours = tubelet_matmul(x, weight, bias)
    assert ours.dtype == torch.bfloat16
    ours_err, plain_err = _errors(ours, x, weight, bias)
    _assert_at_rounding_level(ours_err, plain_err, torch.bfloat16)


def test_non_contiguous_input() -> None:
    x, weight, bias = _case((2, 3, 4, 32, 32), 8, torch.float32, seed=3)
    strided = x.transpose(1, 2).contiguous().transpose(1, 2)  # (B, T, C, H, W) memory, as the model passes it
    assert not strided.is_contiguous()
    assert torch.equal(tubelet_matmul(strided, weight, bias), tubelet_matmul(x, weight, bias))


# ---- the layer ---------------------------------------------------------------------------------------------
def _embed(ops: object, storage: torch.dtype) -> TubeletEmbed:
    cfg = MotionFormerConfig(dim=24)  # narrow, to keep the test small; the tubelet and input channels are the model's
    torch.manual_seed(0)
    embed = TubeletEmbed(cfg, ops)
    with torch.no_grad():
        embed.proj.weight.normal_(0.0, 1536**-0.5)
        embed.proj.bias.normal_()
    embed.proj.weight = nn.Parameter(embed.proj.weight.detach().to(storage), requires_grad=False)
    embed.proj.bias = nn.Parameter(embed.proj.bias.detach().to(storage), requires_grad=False)
    return embed


def _conv_layout(tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """The embedding's tokens (B, t*h*w, D) back in the convolution's layout (B, D, t, h, w)."""
    return tokens.transpose(1, 2).unflatten(2, grid)


def test_parameters_keep_the_checkpoint_names_and_shapes() -> None:
    embed = TubeletEmbed(MotionFormerConfig(), default_ops())
    shapes = {name: tuple(t.shape) for name, t in embed.state_dict().items()}
    assert shapes == {"proj.weight": (768, 3, 2, 16, 16), "proj.bias": (768,)}
    assert isinstance(embed.proj, default_ops().Conv3d)


def test_no_3d_convolution_is_called(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(*args: object, **kwargs: object) -> None:
        raise NotImplementedError("aten::slow_conv3d_forward is not implemented for MPS")

    monkeypatch.setattr(F, "conv3d", unavailable)
    monkeypatch.setattr(torch, "conv3d", unavailable)
    embed = _embed(default_ops(), torch.float32)
    out = embed(torch.rand(2, 3, 16, 64, 48))
    assert out.shape == (2, 8 * 4 * 3, 24)


@pytest.mark.parametrize("storage", [torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn])
def test_casting_layer_casts_stored_weights_to_the_input(storage: torch.dtype) -> None:
    """Weights stored narrower than the activations are cast per call, exactly as for the convolution."""
    embed = _embed(default_ops(), storage)
    x = torch.rand(2, 3, 4, 48, 32) * 2 - 1
    out = embed(x)
    assert out.dtype == torch.float32 and out.shape == (2, 2 * 3 * 2, 24)
    weight, bias = embed.proj.weight.float(), embed.proj.bias.float()  # what the layer computes with
    ours_err, plain_err = _errors(_conv_layout(out, (2, 3, 2)), x, weight, bias)
    _assert_at_rounding_level(ours_err, plain_err, torch.float32)
    assert embed.proj.weight.dtype == storage  # stored weights untouched


@pytest.fixture
def comfy_ops():
    from tests.comfy_stub import install

    uninstall = install()
    import comfy.ops

    yield comfy.ops
    uninstall()


def test_comfy_casting_layer_casts_through_its_own_path(comfy_ops) -> None:
    embed = _embed(comfy_ops.manual_cast, torch.bfloat16)
    assert isinstance(embed.proj, comfy_ops.manual_cast.Conv3d)
    calls_before = comfy_ops.cast_calls.get(type(embed.proj).__name__, 0)
    x = torch.rand(1, 3, 2, 32, 16)
    out = embed(x)
    assert comfy_ops.cast_calls[type(embed.proj).__name__] == calls_before + 1
    assert out.dtype == torch.float32
    ours_err, plain_err = _errors(_conv_layout(out, (1, 2, 1)), x, embed.proj.weight.float(),
                                  embed.proj.bias.float())
    _assert_at_rounding_level(ours_err, plain_err, torch.float32)


def test_comfy_layer_without_casting_uses_its_weights_as_they_are(comfy_ops) -> None:
    embed = _embed(comfy_ops.disable_weight_init, torch.float32)
    x = torch.rand(1, 3, 2, 16, 16)
    ours_err, plain_err = _errors(_conv_layout(embed(x), (1, 1, 1)), x, embed.proj.weight, embed.proj.bias)
    _assert_at_rounding_level(ours_err, plain_err, torch.float32)


# ---- errors --------------------------------------------------------------------------------------------------
def test_input_smaller_than_a_tubelet_is_rejected() -> None:
    x, weight, bias = _case((1, 3, 1, 32, 32), 8, torch.float32, seed=4)
    with pytest.raises(InvalidInputError, match=r"smaller than one 2x16x16 tubelet"):
        tubelet_matmul(x, weight, bias)


def test_wrong_channels_are_rejected() -> None:
    _, weight, bias = _case((1, 3, 2, 16, 16), 8, torch.float32, seed=5)
    with pytest.raises(InvalidInputError, match=r"expected input \(B, 3, T, H, W\)"):
        tubelet_matmul(torch.zeros(1, 4, 2, 16, 16), weight, bias)


def test_overlapping_layers_are_refused() -> None:
    conv = tubelet_conv_class(nn.Conv3d)(3, 8, kernel_size=KERNEL, stride=(1, 16, 16))
    with pytest.raises(ValueError, match=r"only non-overlapping tubelets"):
        conv(torch.zeros(1, 3, 2, 16, 16))
