"""Kernel-3 "same" convolutions over channel-last sequences with Winograd's minimal filtering F(4, 3).

Why: on a CPU a sampling step spends most of its time in the kernel-3 convolutions of the SwiGLU MLPs, and
those already run at the machine's matrix-multiply peak, so only less arithmetic makes them faster. F(4, 3)
computes four neighbouring outputs from six matrix products of a quarter of the sequence, instead of three
products of the whole sequence: half the arithmetic. The transforms cost a few passes over the data, and float32
differences grow to a few times the plain convolution's own rounding (rel-L2 ~1.4e-6 against ~3e-7 for one
448 -> 1280 -> 448 MLP; F(2, 3) would give ~6e-7 but saves only a third and measured 16-24% slower per MLP).

With ``d_j = x[4i - 1 + j]`` (j = 0..5, zero padding) the inputs of tile i and ``g`` the three taps, the four
outputs of the tile are ``A^T [(G g) . (B^T d)]`` (Lavin and Gray, 2016), with the matrices below. Here:
- all six products run as one batched matrix multiply;
- both transforms are small matrix products;
- tiles are ordered (tile, batch), so the SwiGLU's hidden activations can stay in a phase-major layout
  ``[4, tiles + 2, batch, hidden]`` (position 4i + p at [p, i + 1]) from which the next convolution's inputs are
  plain slices.

The transformed filters ``G g`` depend only on the weights, so they are built once (:class:`FilterCache`) and
reused for a whole generation. One switch turns the path on: :func:`fast_path_for`, which the sampler enters for
float32 inference on a CPU; inside it, the network's per-step kernel-3 layers (marked ``per_step``) compute this
way, and on leaving it they are the plain layers again and the filters are gone.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_enabled = True
# Transformed filters held at once (all layers together). F(4, 3) keeps twice the convolution weights: all of a
# small network's fit; of larger float32 networks, the layers beyond the budget keep the plain convolution.
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


def expected_filter_bytes(module: nn.Module, device: torch.device | str, dtype: torch.dtype) -> int:
    """Bytes the transformed filters of ``module``'s per-step kernel-3 layers (marked ``per_step``) will
    hold while sampling on ``device`` in ``dtype``: 0 where the Winograd path does not apply. For memory
    managers, which do not see these caches."""
    if not _switch_applies(device, dtype):
        return 0
    weights = 0
    for layer, _ in _fast_layers(module):
        weights += sum(p.numel() * 4 for name, p in layer.named_parameters() if name.endswith("weight") and p.ndim == 3)
    return min(FILTER_BUDGET_BYTES, _POINTS * weights // 3)


def _switch_applies(device: torch.device | str, dtype: torch.dtype) -> bool:
    return _enabled and torch.device(device).type == "cpu" and dtype == torch.float32


def _is_kernel3(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Conv1d) and tuple(layer.kernel_size) == (3,)


def _fast_layers(module: nn.Module) -> list[tuple[nn.Module, Callable[..., Any]]]:
    """The per-step kernel-3 layers of ``module``, each with the fast forward builder that fits it."""
    found = []
    for layer in module.modules():
        if not getattr(layer, "per_step", False):
            continue
        if isinstance(layer, nn.Conv1d):
            if _is_kernel3(layer):
                found.append((layer, _fast_conv_forward))
        elif all(_is_kernel3(getattr(layer, name, None)) for name in ("w1", "w2", "w3")):
            found.append((layer, _fast_swiglu_forward))
    return found


@contextmanager
def fast_path_for(module: nn.Module, device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """Inside the block, ``module``'s per-step kernel-3 layers compute with F(4, 3) when they run float32
    inference on a CPU (anything else takes their plain forward); afterwards they are plain layers again and
    their transformed filters are released (also after an error or an interrupt)."""
    if not _switch_applies(device, dtype):
        yield
        return
    patched: list[tuple[nn.Module, FilterCache]] = []
    try:
        for layer, build in _fast_layers(module):
            cache = FilterCache()
            layer.forward = build(layer, cache)  # an instance attribute: the class forward is untouched
            patched.append((layer, cache))
        yield
    finally:
        for layer, cache in patched:
            del layer.forward
            cache.clear()


def _fast_conv_forward(layer: nn.Module, cache: FilterCache) -> Callable[[torch.Tensor], torch.Tensor]:
    plain = type(layer).forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        if applies_to(x):
            weights = stored_weights([layer], x)
            bias = layer.bias
            if weights is not None and (bias is None or (bias.dtype == x.dtype and bias.device == x.device)):
                filters = cache.get(weights, filter_tiles)
                if filters is not None:  # None: beyond the filter memory budget
                    return conv3(x, filters, bias)
        return plain(layer, x)

    return forward


def _fast_swiglu_forward(layer: nn.Module, cache: FilterCache) -> Callable[[torch.Tensor], torch.Tensor]:
    plain = type(layer).forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        if applies_to(x):
            weights = stored_weights([layer.w1, layer.w2, layer.w3], x)
            filters = None if weights is None else cache.get(weights, swiglu_filters)
            if filters is not None:  # None: not the stored weights, or beyond the filter memory budget
                return swiglu3(x, *filters)
        return plain(layer, x)

    return forward


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
            expected = _POINTS * sum(w.numel() * w.element_size() for w in weights) // 3
            if held_filter_bytes() + expected <= FILTER_BUDGET_BYTES:
                self._filters = build(*weights)
                self.nbytes = _nbytes(self._filters)
            self._key = key  # also remembers "did not fit" until the next clear
        return self._filters

    def clear(self) -> None:
        self._key = self._filters = None
        self.nbytes = 0


_POINTS = 6  # inputs (and products) per tile
_OUTPUTS = 4  # outputs per tile
_DATA = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0),
         (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))  # B^T
_FILTER = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
           (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))  # G
_DATA_INNER = tuple(row[1:5] for row in _DATA)  # the columns of d1..d4
_OUTPUT = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))  # A^T


def _matrix(rows: tuple[tuple[float, ...], ...], like: torch.Tensor) -> torch.Tensor:
    return _transform(rows, like.dtype, like.device)


@cache
def _transform(rows: tuple[tuple[float, ...], ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A transform matrix, made once per dtype and device (the path runs on the CPU only) instead of per call."""
    return torch.tensor(rows, dtype=dtype, device=device)


def filter_tiles(weight: torch.Tensor) -> torch.Tensor:
    """Conv1d weight [out, in, 3] to the six transformed filters [6, in, out] (computed in float64: 1/6 and 1/24
    are not exact in float32)."""
    if weight.ndim != 3 or weight.shape[2] != 3:
        raise ValueError(f"expected a kernel-3 Conv1d weight [out, in, 3], got {list(weight.shape)}")
    taps = weight.permute(2, 1, 0).to(torch.float64).reshape(3, -1)  # [3, in * out]
    tiles = torch.tensor(_FILTER, dtype=torch.float64, device=weight.device) @ taps
    return tiles.to(weight.dtype).view(_POINTS, weight.shape[1], weight.shape[0])


def swiglu_filters(gate: torch.Tensor, down: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The filters :func:`swiglu3` takes, from the w1 (gate), w2 (down) and w3 (value) Conv1d weights."""
    return torch.cat([filter_tiles(gate), filter_tiles(value)], dim=2), filter_tiles(down)


def _tiles_from_sequence(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """[B, L, C] to the transformed input tiles [6, T * B, C] in (tile, batch) order, and T = ceil(L / 4)."""
    batch, length, channels = x.shape
    tiles = -(-length // _OUTPUTS)
    by_position = F.pad(x, (0, 0, 1, _OUTPUTS * tiles - length + 1)).transpose(0, 1)  # [4T + 2, B, C], x[-1] = 0
    data = torch.stack([by_position[j:j + _OUTPUTS * tiles:_OUTPUTS] for j in range(_POINTS)])  # [6, T, B, C]
    return (_matrix(_DATA, x) @ data.view(_POINTS, -1)).view(_POINTS, tiles * batch, channels), tiles


def _tiles_from_phases(phases: torch.Tensor) -> torch.Tensor:
    """Transformed input tiles [6, T * B, C] of a sequence held phase-major, ``phases`` [4, T + 2, B, C] with
    position 4i + p at [p, i + 1] and zero rows at i = -1 and i = T (the padding)."""
    _, rows, batch, channels = phases.shape
    tiles = rows - 2
    # d1..d4 are the four phases of tile i: one product with the middle columns of B^T; d0 (x[4i - 1], phase 3 of
    # the tile before) only enters v0 (times 4) and d5 (x[4i + 4], phase 0 of the tile after) only v5.
    inner = _matrix(_DATA_INNER, phases)
    out = (inner @ phases[:, 1:tiles + 1].reshape(_OUTPUTS, -1)).view(_POINTS, tiles * batch, channels)
    out[0].view(-1).add_(phases[3, :tiles].reshape(-1), alpha=4)
    out[5].view(-1).add_(phases[0, 2:].reshape(-1))
    return out


def _phases(products: torch.Tensor, tiles: int) -> torch.Tensor:
    """The six products [6, T * B, out] to the outputs in phase-major layout [4, T, B, out]."""
    points, rows, channels = products.shape
    return (_matrix(_OUTPUT, products) @ products.view(points, -1)).view(_OUTPUTS, tiles, rows // tiles, channels)


def _sequence(phases: torch.Tensor, length: int) -> torch.Tensor:
    """Phase-major outputs [4, T, B, out] back to [B, L, out]."""
    _, tiles, batch, channels = phases.shape
    return phases.permute(2, 1, 0, 3).reshape(batch, _OUTPUTS * tiles, channels)[:, :length]


def conv3(x: torch.Tensor, filters: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A kernel-3, padding-1 convolution of x [B, L, in] with :func:`filter_tiles` ``filters``: [B, L, out]."""
    tiles, count = _tiles_from_sequence(x)
    out = _sequence(_phases(torch.bmm(tiles, filters), count), x.shape[1])
    return out if bias is None else out + bias


def swiglu3(x: torch.Tensor, gate_and_value: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """w2(silu(w1 x) * w3 x) for kernel-3 convolutions, x [B, L, C].

    ``gate_and_value`` holds the filters of w1 and w3 side by side ([6, C, 2H], one product for both), ``down``
    those of w2 ([6, H, C]). The hidden activations are written phase-major with zero rows around them, the
    layout the tiles of w2 are sliced from, so only the output is put back in sequence order.
    """
    batch, length, _ = x.shape
    hidden = down.shape[1]
    tiles, count = _tiles_from_sequence(x)
    both = _phases(torch.bmm(tiles, gate_and_value), count)  # [4, T, B, 2H]
    phases = x.new_empty(_OUTPUTS, count + 2, batch, hidden)
    phases[:, 0].zero_()
    phases[:, count + 1].zero_()
    torch.mul(F.silu(both[..., :hidden], inplace=True), both[..., hidden:], out=phases[:, 1:count + 1])
    last = length - _OUTPUTS * (count - 1)  # positions used in the last tile
    if last < _OUTPUTS:  # positions past the end: w2 must see zero padding there
        phases[last:, count].zero_()
    return _sequence(_phases(torch.bmm(_tiles_from_phases(phases), down), count), length)
