"""Layer namespaces ("ops") that the library's modules are built from.

Every module takes an ``ops`` namespace instead of using ``torch.nn`` directly, the way ComfyUI's own models
do. Standalone, :func:`default_ops` gives layers that keep their weights in any storage dtype (fp32, fp16,
bf16, fp8) and cast them to the activation dtype and device on the fly; inside ComfyUI the node layer passes
``comfy.ops`` instead, so the memory manager can offload single layers.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def cast_like_input(param: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``param`` in the dtype and on the device of ``like`` (no copy when they already match)."""
    if param.dtype == like.dtype and param.device == like.device:
        return param
    return param.to(device=like.device, dtype=like.dtype, non_blocking=True)


def _cast(param: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if param is None else cast_like_input(param, like)


class CastLinear(nn.Linear):
    """Linear layer whose stored weights may be in a narrower dtype than the activations."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, _cast(self.weight, x), _cast(self.bias, x))


class CastConv1d(nn.Conv1d):
    """Conv1d whose stored weights may be in a narrower dtype than the activations."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, _cast(self.weight, x), _cast(self.bias, x))


class CastConv2d(nn.Conv2d):
    """Conv2d whose stored weights may be in a narrower dtype than the activations."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, _cast(self.weight, x), _cast(self.bias, x))


class CastConv3d(nn.Conv3d):
    """Conv3d whose stored weights may be in a narrower dtype than the activations."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, _cast(self.weight, x), _cast(self.bias, x))


class CastConvTranspose1d(nn.ConvTranspose1d):
    """ConvTranspose1d whose stored weights may be in a narrower dtype than the activations."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        padding = self._output_padding(
            x, output_size, list(self.stride), list(self.padding), list(self.kernel_size), 1,
            list(self.dilation),
        )
        return F.conv_transpose1d(
            x, _cast(self.weight, x), _cast(self.bias, x), self.stride, self.padding, padding, self.groups,
            self.dilation,
        )


class CastLayerNorm(nn.LayerNorm):
    """LayerNorm whose affine parameters (if any) may be stored in a narrower dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, _cast(self.weight, x), _cast(self.bias, x), self.eps)


class CastEmbedding(nn.Embedding):
    """Embedding kept in a storage dtype; the lookup is returned in the table's compute dtype by callers."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if weight.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            weight = weight.to(torch.bfloat16)
        return F.embedding(ids, weight, self.padding_idx)


def default_ops() -> Any:
    """The namespace used when no ComfyUI ``comfy.ops`` namespace is given."""
    return SimpleNamespace(
        Linear=CastLinear,
        Conv1d=CastConv1d,
        Conv2d=CastConv2d,
        Conv3d=CastConv3d,
        ConvTranspose1d=CastConvTranspose1d,
        LayerNorm=CastLayerNorm,
        Embedding=CastEmbedding,
    )


def resolve_ops(ops: Any | None) -> Any:
    """``ops`` itself, or the default namespace when ``None``."""
    return default_ops() if ops is None else ops


CASTING_LAYERS = (CastLinear, CastConv1d, CastConv2d, CastConv3d, CastConvTranspose1d)
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def to_storage_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor`` in ``dtype``; fp8 targets are clamped to the format's range first (e4m3fn has no infinity, so
    an out-of-range value would otherwise become NaN)."""
    if tensor.dtype == dtype:
        return tensor
    if dtype in FP8_DTYPES:
        limit = torch.finfo(dtype).max
        return tensor.float().clamp(-limit, limit).to(dtype)
    return tensor.to(dtype)


def _is_casting_layer(layer: nn.Module) -> bool:
    return isinstance(layer, CASTING_LAYERS)


def store_layer_weights(module: nn.Module, dtype: torch.dtype,
                        is_casting_layer: Callable[[nn.Module], bool] = _is_casting_layer) -> int:
    """Keep the weights of ``module``'s casting layers in ``dtype`` (fp8 storage halves fp16's memory); biases,
    norms and bare parameters stay as they are. ``is_casting_layer`` tells which layers cast their weights per
    call (ComfyUI's ``comfy.ops`` layers for the node layer). Returns the number of layers changed."""
    changed = 0
    for layer in module.modules():
        if is_casting_layer(layer) and layer.weight.dtype != dtype:
            layer.weight = nn.Parameter(to_storage_dtype(layer.weight.detach(), dtype), requires_grad=False)
            changed += 1
    return changed
