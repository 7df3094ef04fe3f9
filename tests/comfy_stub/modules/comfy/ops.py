"""Stand-in for ``comfy.ops``: layer namespaces whose layers can cast their weights per call.

``disable_weight_init`` layers skip random initialisation and cast only when ``comfy_cast_weights`` is set (the
memory manager sets it on offloaded layers); ``manual_cast`` layers always cast weight and bias to the input's
dtype and device. Every call of a casting layer is counted in ``cast_calls`` so tests can see that the library
really built its layers from the namespace it was given.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from . import model_management

cast_calls: dict[str, int] = {}


def cast_bias_weight(layer, input=None, dtype=None, device=None, bias_dtype=None):
    if input is not None:
        dtype = input.dtype if dtype is None else dtype
        device = input.device if device is None else device
    bias_dtype = dtype if bias_dtype is None else bias_dtype
    name = type(layer).__name__
    cast_calls[name] = cast_calls.get(name, 0) + 1
    weight = layer.weight.to(device=device, dtype=dtype) if layer.weight is not None else None
    bias = layer.bias.to(device=device, dtype=bias_dtype) if getattr(layer, "bias", None) is not None else None
    return weight, bias


class CastWeightBiasOp:
    comfy_cast_weights = False
    weight_function: ClassVar[list] = []
    bias_function: ClassVar[list] = []


def _uses_cast(layer) -> bool:
    return layer.comfy_cast_weights or bool(layer.weight_function) or bool(layer.bias_function)


class disable_weight_init:  # noqa: N801  (ComfyUI's name)
    class Linear(torch.nn.Linear, CastWeightBiasOp):
        def reset_parameters(self):
            return None

        def forward(self, input):
            if not _uses_cast(self):
                return super().forward(input)
            weight, bias = cast_bias_weight(self, input)
            return F.linear(input, weight, bias)

    class Conv1d(torch.nn.Conv1d, CastWeightBiasOp):
        def reset_parameters(self):
            return None

        def forward(self, input):
            if not _uses_cast(self):
                return super().forward(input)
            weight, bias = cast_bias_weight(self, input)
            return self._conv_forward(input, weight, bias)

    class Conv2d(torch.nn.Conv2d, CastWeightBiasOp):
        def reset_parameters(self):
            return None

        def forward(self, input):
            if not _uses_cast(self):
                return super().forward(input)
            weight, bias = cast_bias_weight(self, input)
            return self._conv_forward(input, weight, bias)

    class Conv3d(torch.nn.Conv3d, CastWeightBiasOp):
        def reset_parameters(self):
            return None

        def forward(self, input):
            if not _uses_cast(self):
                return super().forward(input)
            weight, bias = cast_bias_weight(self, input)
            return self._conv_forward(input, weight, bias)

    class ConvTranspose1d(torch.nn.ConvTranspose1d, CastWeightBiasOp):
        def reset_parameters(self):
            return None

        def forward(self, input, output_size=None):
            if not _uses_cast(self):
                return super().forward(input, output_size)
            padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size, 1,
                                           self.dilation)
            weight, bias = cast_bias_weight(self, input)
            return F.conv_transpose1d(input, weight, bias, self.stride, self.padding, padding, self.groups,
                                      self.dilation)

    class LayerNorm(torch.nn.LayerNorm, CastWeightBiasOp):
        def reset_parameters(self):
            return None

        def forward(self, input):
            if not _uses_cast(self):
                return super().forward(input)
            weight, bias = cast_bias_weight(self, input) if self.weight is not None else (None, None)
            return F.layer_norm(input, self.normalized_shape, weight, bias, self.eps)

    class GroupNorm(torch.nn.GroupNorm, CastWeightBiasOp):
        def reset_parameters(self):
            return None

        def forward(self, input):
            if not _uses_cast(self):
                return super().forward(input)
            weight, bias = cast_bias_weight(self, input)
            return F.group_norm(input, self.num_groups, weight, bias, self.eps)

    class Embedding(torch.nn.Embedding, CastWeightBiasOp):
        def reset_parameters(self):
            self.bias = None
            return None

        def forward(self, input, out_dtype=None):
            if not _uses_cast(self):
                return super().forward(input)
            dtype = None if self.weight.dtype in (torch.float16, torch.bfloat16) else out_dtype
            weight, _ = cast_bias_weight(self, device=input.device, dtype=dtype)
            return F.embedding(input, weight, self.padding_idx).to(dtype=out_dtype)


class manual_cast(disable_weight_init):  # noqa: N801
    class Linear(disable_weight_init.Linear):
        comfy_cast_weights = True

    class Conv1d(disable_weight_init.Conv1d):
        comfy_cast_weights = True

    class Conv2d(disable_weight_init.Conv2d):
        comfy_cast_weights = True

    class Conv3d(disable_weight_init.Conv3d):
        comfy_cast_weights = True

    class ConvTranspose1d(disable_weight_init.ConvTranspose1d):
        comfy_cast_weights = True

    class LayerNorm(disable_weight_init.LayerNorm):
        comfy_cast_weights = True

    class GroupNorm(disable_weight_init.GroupNorm):
        comfy_cast_weights = True

    class Embedding(disable_weight_init.Embedding):
        comfy_cast_weights = True


class fp8_ops(manual_cast):  # noqa: N801
    """ComfyUI multiplies in fp8 here; the stand-in only casts (it runs on CPU)."""


def pick_operations(weight_dtype, compute_dtype, load_device=None, disable_fast_fp8=False, fp8_optimizations=False,
                    scaled_fp8=None):
    if model_management.supports_fp8_compute(load_device) and fp8_optimizations and not disable_fast_fp8:
        return fp8_ops
    if compute_dtype is None or weight_dtype == compute_dtype:
        return disable_weight_init
    return manual_cast
