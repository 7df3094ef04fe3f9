"""Kernel-3 "same" convolutions over channel-last sequences with Winograd's minimal filtering F(2, 3).

Why: on a CPU a sampling step spends most of its time in the kernel-3 convolutions of the SwiGLU MLPs, and
those already run at the machine's matrix-multiply peak, so only less arithmetic makes them faster. F(2, 3)
computes two neighbouring outputs from four matrix products of half the sequence instead of three products of
the whole sequence: a third less arithmetic, with float32 differences of about 1e-6 relative (the transforms
only add, subtract and halve).

For outputs 2i and 2i + 1 of ``y[n] = sum_k x[n - 1 + k] @ g_k`` (zero padding), with ``d_j = x[2i - 1 + j]``:

    m0 = (d0 - d2) @ g0          m1 = (d1 + d2) @ (g0 + g1 + g2) / 2
    m2 = (d2 - d1) @ (g0 - g1 + g2) / 2          m3 = (d1 - d3) @ g2
    y[2i] = m0 + m1 + m2         y[2i + 1] = m1 - m2 - m3

The four products of every tile run as one batched matrix multiply. The transformed filters depend only on the
weights, so callers compute them once (:func:`filter_tiles`) and reuse them for a whole generation.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_enabled = True
# Transformed filters held at once (all layers together). F(2, 3) keeps 4/3 of the convolution weights: all of a
# small network's fit; of a large float32 network, the layers beyond the budget keep the plain convolution.
FILTER_BUDGET_BYTES = 2 << 30
_live_caches: weakref.WeakSet[FilterCache] = weakref.WeakSet()  # a cache dropped with its module stops counting


def winograd_enabled() -> bool:
    """Whether layers may take the Winograd path (see :func:`use_winograd`)."""
    return _enabled


@contextmanager
def use_winograd(enabled: bool) -> Iterator[None]:
    """Turn the Winograd path on or off inside a ``with`` block (benchmarks compare both)."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


def held_filter_bytes() -> int:
    """Bytes of transformed filters currently kept by all live :class:`FilterCache` objects."""
    return sum(cache.nbytes for cache in list(_live_caches))


def applies_to(x: torch.Tensor) -> bool:
    """True where the Winograd path is faster and exact enough: float32 inference on a CPU.

    GPUs do the plain convolution on tensor cores at a fraction of the cost of the extra memory passes, lower
    precisions would lose more to the transforms than float32 does, and training keeps the plain convolution.
    """
    return (_enabled and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling())


def stored_weights(layers: Sequence[nn.Module], x: torch.Tensor) -> list[torch.Tensor] | None:
    """The weights of ``layers`` if each layer would compute with its stored weight as it is: same dtype and
    device as ``x`` and no ComfyUI weight patches applied per call. Otherwise None (take the plain path)."""
    weights = [layer.weight for layer in layers]
    if any(w.dtype != x.dtype or w.device != x.device for w in weights):
        return None
    if any(getattr(layer, "weight_function", None) or getattr(layer, "bias_function", None) for layer in layers):
        return None
    return weights


def _nbytes(filters: Any) -> int:
    tensors = filters if isinstance(filters, tuple) else (filters,)
    return sum(t.numel() * t.element_size() for t in tensors)


def _version_of(weight: torch.Tensor) -> int | None:
    """The in-place version of a weight; inference tensors (weights ComfyUI loads under inference mode) keep
    none, and only their storage identifies them (the caches are released after every generation anyway)."""
    return None if weight.is_inference() else weight._version


class FilterCache:
    """Transformed filters of some weights, rebuilt whenever a weight is replaced or changed in place.

    Kept between the steps of a generation (building them costs about as much as one forward saves) and dropped
    afterwards by :meth:`clear`. Within :data:`FILTER_BUDGET_BYTES` for all caches together; a layer whose
    filters do not fit gets None and keeps the plain convolution.
    """

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._filters: Any = None
        self.nbytes = 0
        _live_caches.add(self)

    def get(self, weights: Sequence[torch.Tensor], build: Callable[..., Any]) -> Any:
        key = tuple((w.data_ptr(), _version_of(w), tuple(w.shape), w.dtype, w.device) for w in weights)
        if key != self._key:
            self.clear()
            expected = 4 * sum(w.numel() * w.element_size() for w in weights) // 3
            if held_filter_bytes() + expected <= FILTER_BUDGET_BYTES:
                self._filters = build(*weights)
                self.nbytes = _nbytes(self._filters)
            self._key = key  # also remembers "did not fit" until the next clear
        return self._filters

    def clear(self) -> None:
        self._key = self._filters = None
        self.nbytes = 0


def filter_tiles(weight: torch.Tensor) -> torch.Tensor:
    """Conv1d weight [out, in, 3] to the four transformed filters [4, in, out] of F(2, 3)."""
    if weight.ndim != 3 or weight.shape[2] != 3:
        raise ValueError(f"expected a kernel-3 Conv1d weight [out, in, 3], got {list(weight.shape)}")
    taps = weight.permute(2, 1, 0)  # [3, in, out]
    outer = taps[0] + taps[2]
    return torch.stack([taps[0], (outer + taps[1]) * 0.5, (outer - taps[1]) * 0.5, taps[2]])


def swiglu_filters(gate: torch.Tensor, down: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The filters :func:`swiglu3` takes, from the w1 (gate), w2 (down) and w3 (value) Conv1d weights."""
    return torch.cat([filter_tiles(gate), filter_tiles(value)], dim=2), filter_tiles(down).contiguous()


def _tiles_from_sequence(x: torch.Tensor) -> torch.Tensor:
    """[B, L, C] to the transformed input tiles [4, B * T, C], T = ceil(L / 2)."""
    batch, length, channels = x.shape
    tiles = (length + 1) // 2
    padded = F.pad(x, (0, 0, 1, 1 + length % 2))  # x[-1] = 0 and zeros after the end
    d0, d1, d2, d3 = (padded[:, j:j + 2 * tiles:2] for j in range(4))
    out = x.new_empty(4, batch, tiles, channels)
    torch.sub(d0, d2, out=out[0])
    torch.add(d1, d2, out=out[1])
    torch.sub(d2, d1, out=out[2])
    torch.sub(d1, d3, out=out[3])
    return out.view(4, batch * tiles, channels)


def _tiles_from_even_odd(even: torch.Tensor, odd_shifted: torch.Tensor) -> torch.Tensor:
    """Transformed input tiles [4, B * T, C] of a sequence held as its even positions ``even`` [B, T + 1, C]
    (the last row zero) and its odd positions ``odd_shifted`` [B, T + 1, C] (shifted by one: row 0 zero)."""
    batch, rows, channels = even.shape
    tiles = rows - 1
    previous_odd, odd = odd_shifted[:, :tiles], odd_shifted[:, 1:]  # x[2i - 1], x[2i + 1]
    this_even, next_even = even[:, :tiles], even[:, 1:]  # x[2i], x[2i + 2]
    out = even.new_empty(4, batch, tiles, channels)
    torch.sub(previous_odd, odd, out=out[0])
    torch.add(this_even, odd, out=out[1])
    torch.sub(odd, this_even, out=out[2])
    torch.sub(this_even, next_even, out=out[3])
    return out.view(4, batch * tiles, channels)


def _products(tiles: torch.Tensor, filters: torch.Tensor, batch: int) -> torch.Tensor:
    products = torch.bmm(tiles, filters)  # [4, B * T, out]
    return products.view(4, batch, -1, products.shape[-1])


def _interleave(products: torch.Tensor, length: int, bias: torch.Tensor | None) -> torch.Tensor:
    """Outputs [B, L, out] from the four products [4, B, T, out]."""
    _, batch, tiles, channels = products.shape
    out = products.new_empty(batch, tiles, 2, channels)
    even, odd = out[:, :, 0], out[:, :, 1]
    torch.add(products[0], products[1], out=even)
    even.add_(products[2])
    torch.sub(products[1], products[2], out=odd)
    odd.sub_(products[3])
    out = out.view(batch, 2 * tiles, channels)[:, :length]
    return out if bias is None else out + bias


def conv3(x: torch.Tensor, filters: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A kernel-3, padding-1 convolution of x [B, L, in] with :func:`filter_tiles` ``filters``: [B, L, out]."""
    return _interleave(_products(_tiles_from_sequence(x), filters, x.shape[0]), x.shape[1], bias)


def swiglu3(x: torch.Tensor, gate_and_value: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """w2(silu(w1 x) * w3 x) for kernel-3 convolutions, x [B, L, C].

    ``gate_and_value`` holds the filters of w1 and w3 side by side ([4, C, 2H], one product for both), ``down``
    those of w2 ([4, H, C]). The hidden activations stay split into even and odd positions, which is the
    layout both the SwiGLU product and the tiles of w2 need, so only the output is interleaved.
    """
    batch, length, _ = x.shape
    hidden = down.shape[1]
    products = _products(_tiles_from_sequence(x), gate_and_value, batch)  # [4, B, T, 2H]
    tiles = products.shape[2]
    even_pre, odd_pre = products[0], products[1]  # combined in place: m0 + m1 + m2 and m1 - m2 - m3
    even_pre += odd_pre
    even_pre += products[2]
    odd_pre -= products[2]
    odd_pre -= products[3]
    even = x.new_empty(batch, tiles + 1, hidden)
    odd_shifted = x.new_empty(batch, tiles + 1, hidden)
    even[:, tiles].zero_()  # x[2T] lies past the end
    odd_shifted[:, 0].zero_()  # x[-1]
    torch.mul(F.silu(even_pre[..., :hidden], inplace=True), even_pre[..., hidden:], out=even[:, :tiles])
    torch.mul(F.silu(odd_pre[..., :hidden], inplace=True), odd_pre[..., hidden:], out=odd_shifted[:, 1:])
    if length % 2:  # position L lies past the end: w2 must see zero padding there
        odd_shifted[:, tiles].zero_()
    down_products = _products(_tiles_from_even_odd(even, odd_shifted), down, batch)
    return _interleave(down_products, length, None)
