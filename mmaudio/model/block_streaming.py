"""Block streaming: run a large transformer on a small GPU while its blocks stay in CPU memory.

A model that can be streamed names its blocks, in the order its forward runs them, with a ``streamed_blocks()``
method: the flow network's joint and fused blocks (large_44k_v2: about 1 B parameters, 2.2 GB in bf16), CLIP's
image and text transformer blocks (1 B parameters, 1.97 GB in bf16). Those blocks hold nearly all of the weights.
Inside :func:`stream_blocks` each block gets a device copy of its weights just before it runs and loses it right
after; the copy of the next ``prefetch`` blocks is issued on a side stream while the current block computes, so
transfers hide behind compute. Everything outside the blocks (input projections, embeddings, final layers, learned
empty features, latent statistics) is small and stays on the device for the whole context.

The network's modules are not rewritten: forward hooks on the blocks swap their parameter entries between the
CPU master tensors and device copies. On exit (normal, exception or KeyboardInterrupt) every module holds its
original tensors again, the hooks are gone and no copy of ours remains on the device. Inference only: the copies
do not require grad, and gradients would never reach the masters.
"""

from __future__ import annotations

import contextlib
import heapq
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError

# Device types whose torch backend (torch.cuda, torch.xpu: Stream, current_stream, stream) gives a second stream for
# the copies. Elsewhere (CPU, MPS) the copies run in order with the compute: still correct, without the overlap.
_SIDE_STREAM_DEVICE_TYPES = ("cuda", "xpu")

_streaming: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # networks inside a stream_blocks context


@dataclass(frozen=True, eq=False)
class _Slot:
    """One tensor entry of a module (``module._parameters[name]`` or ``module._buffers[name]``) and the tensor it
    held when streaming began."""

    module: nn.Module
    table: str
    name: str
    master: torch.Tensor

    def put(self, tensor: torch.Tensor) -> None:
        getattr(self.module, self.table)[self.name] = tensor


def _slots(modules: Iterable[nn.Module]) -> list[_Slot]:
    """The parameter and buffer entries held directly by ``modules`` (empty entries such as ``bias=None`` skipped)."""
    found = []
    for module in modules:
        for table in ("_parameters", "_buffers"):
            for name, tensor in getattr(module, table).items():
                if tensor is not None:
                    found.append(_Slot(module, table, name, tensor))
    return found


def can_stream(module: nn.Module) -> bool:
    """Whether ``module`` names blocks to stream (a ``streamed_blocks()`` method)."""
    return callable(getattr(module, "streamed_blocks", None))


def is_streaming(module: nn.Module) -> bool:
    """Whether ``module`` is inside a :func:`stream_blocks` context now."""
    return module in _streaming


def streamed_blocks(network: nn.Module) -> list[nn.Module]:
    """The blocks that are streamed, in the order the model's forward runs them (its ``streamed_blocks()``)."""
    if not can_stream(network):
        raise InvalidInputError(
            f"stream_blocks: {type(network).__name__} names no blocks to stream (no streamed_blocks method)")
    return list(network.streamed_blocks())


def _resident_modules(network: nn.Module, blocks: list[nn.Module]) -> list[nn.Module]:
    inside = {id(module) for block in blocks for module in block.modules()}
    return [module for module in network.modules() if id(module) not in inside]


def _nbytes(slots: Iterable[_Slot]) -> int:
    unique = {id(slot.master): slot.master for slot in slots}
    return sum(t.numel() * t.element_size() for t in unique.values())


def _check_prefetch(prefetch: int) -> int:
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
        raise InvalidInputError(f"stream_blocks: prefetch must be a non-negative integer, got {prefetch!r}")
    return prefetch


def streaming_peak_bytes(network: nn.Module, prefetch: int = 1) -> int:
    """Bytes of weights on the device at the peak of :func:`stream_blocks`: everything outside the blocks plus
    the ``prefetch + 1`` largest blocks (the running one and those being copied), in their stored dtypes.

    A memory estimate for the memory manager; activations and the network's own device caches come on top.
    """
    blocks = streamed_blocks(network)
    window = min(_check_prefetch(prefetch), len(blocks) - 1) + 1 if blocks else 0
    block_bytes = [_nbytes(_slots(block.modules())) for block in blocks]
    return _nbytes(_slots(_resident_modules(network, blocks))) + sum(heapq.nlargest(window, block_bytes))


def _device_copy(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """An uninitialised tensor on ``device`` with the shape, dtype and strides of ``tensor``, allocated on the
    current stream (so its memory is reused only in that stream's order)."""
    return torch.empty_like(tensor, device=device, requires_grad=False)


def _stream_backend(device: torch.device) -> Any:
    """The torch module with the stream API of ``device`` (``torch.cuda``, ``torch.xpu``), or None."""
    return getattr(torch, device.type) if device.type in _SIDE_STREAM_DEVICE_TYPES else None


def _as_entry(slot: _Slot, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in the form the slot's table holds: a Parameter (without grad) for parameter entries."""
    return nn.Parameter(tensor, requires_grad=False) if slot.table == "_parameters" else tensor


class BlockStreamer:
    """The state of one :func:`stream_blocks` context: which blocks have device copies, and the copying.

    A block "on the device" has a copy in flight or in use. Before block ``i`` runs, blocks ``i .. i + prefetch``
    (cyclically: after the last block the first one of the next step) are on the device and nothing else; after
    it ran, block ``i`` is dropped.
    """

    def __init__(self, blocks: list[nn.Module], device: torch.device, prefetch: int, pin_memory: bool) -> None:
        self.device = device
        self.prefetch = min(prefetch, max(len(blocks) - 1, 0))
        self.transfers = 0  # blocks copied to the device so far
        self._blocks = blocks
        self._block_slots = [_slots(block.modules()) for block in blocks]
        self._sources = self._copy_sources(pin_memory)
        self._copies: dict[int, list[torch.Tensor]] = {}
        self._ready: dict[int, Any] = {}  # block -> event after its copy on the side stream, not yet awaited
        self._backend = _stream_backend(device)
        self._side = self._backend.Stream(device=device) if self._backend is not None else None

    def _copy_sources(self, pin_memory: bool) -> list[list[torch.Tensor]]:
        """Per block, what each entry is copied from: a page-locked duplicate of a CPU master (asynchronous
        copies), or the master itself. A tensor shared by several entries gets one duplicate."""
        pinned: dict[int, torch.Tensor] = {}

        def source(master: torch.Tensor) -> torch.Tensor:
            if not pin_memory or master.device.type != "cpu":
                return master
            if id(master) not in pinned:
                pinned[id(master)] = master.detach().pin_memory()
            return pinned[id(master)]

        return [[source(slot.master) for slot in slots] for slots in self._block_slots]

    def resident_blocks(self) -> list[int]:
        """Indices (in :func:`streamed_blocks` order) of the blocks that have a device copy now."""
        return sorted(self._copies)

    def before_block(self, index: int) -> None:
        """Make block ``index`` compute with its device copy, and start copying the blocks that follow it."""
        window = [(index + ahead) % len(self._blocks) for ahead in range(self.prefetch + 1)]
        for stale in [i for i in self._copies if i not in window]:  # left over by a block that raised
            self.drop(stale)
        for i in window:
            self._load(i)
        self._activate(index)

    def drop(self, index: int) -> None:
        """Give block ``index`` its master tensors back and free its device copy."""
        for slot in self._block_slots[index]:
            slot.put(slot.master)
        self._await_copy(index)  # a copy never used may still be in flight into memory that is about to be freed
        self._copies.pop(index, None)

    def _compute_stream(self) -> Any:
        return self._backend.current_stream(self.device)

    def _await_copy(self, index: int) -> None:
        """Order the compute stream after block ``index``'s copy (once; nothing to order without a side stream)."""
        ready = self._ready.pop(index, None)
        if ready is not None:
            self._compute_stream().wait_event(ready)

    def _load(self, index: int) -> None:
        """Start copying block ``index`` to the device (on the side stream where there is one)."""
        if index in self._copies:
            return
        slots, sources = self._block_slots[index], self._sources[index]
        unique = list({id(source): source for source in sources}.values())  # tied tensors are copied once
        # Allocated on the compute stream, so the memory is handed out again only in that stream's order; the side
        # stream first waits for the compute already issued, which may still use this memory's previous tenant.
        made = {id(source): _device_copy(source, self.device) for source in unique}
        if self._side is None:
            for source in unique:
                made[id(source)].copy_(source)
        else:
            self._side.wait_stream(self._compute_stream())
            with self._backend.stream(self._side):
                for source in unique:
                    made[id(source)].copy_(source, non_blocking=True)
            self._ready[index] = self._side.record_event()
        self._copies[index] = [_as_entry(slot, made[id(source)]) for slot, source in zip(slots, sources, strict=True)]
        self.transfers += 1

    def _activate(self, index: int) -> None:
        self._await_copy(index)
        for slot, copy in zip(self._block_slots[index], self._copies[index], strict=True):
            slot.put(copy)

    def close(self) -> None:
        """Every block back on its masters; waits for copies still in flight before their sources are freed."""
        for index in range(len(self._blocks)):
            self.drop(index)
        if self._side is not None:
            self._side.synchronize()
        self._sources = []


def _hooks(blocks: list[nn.Module], streamer: BlockStreamer) -> list[torch.utils.hooks.RemovableHandle]:
    handles = []
    for index, block in enumerate(blocks):
        def before(_module: nn.Module, _args: Any, index: int = index) -> None:
            streamer.before_block(index)

        def after(_module: nn.Module, _args: Any, _output: Any, index: int = index) -> None:
            streamer.drop(index)

        handles.append(block.register_forward_pre_hook(before))
        handles.append(block.register_forward_hook(after, always_call=True))
    return handles


@contextlib.contextmanager
def stream_blocks(network: nn.Module, device: torch.device | str, *, prefetch: int = 1,
                  pin_memory: bool | None = None) -> Iterator[BlockStreamer]:
    """Run ``network`` on ``device`` with its blocks brought there one at a time (see the module docstring).

    ``prefetch``: how many blocks are copied ahead of the running one (0: each block is copied when it is about
    to run). ``pin_memory`` (default: on for CUDA/XPU) copies from page-locked duplicates of the blocks' CPU
    tensors, made on entry and freed on exit (host memory for one more copy of the blocks), so the transfers are
    truly asynchronous. Weights are copied in their stored dtype (fp8/bf16 stay fp8/bf16).
    ``streaming_peak_bytes(network, prefetch)`` is what this puts on the device at most. Run the plain forward
    inside (no torch.compile / CUDA graphs: they would capture one set of device copies).
    """
    device = torch.device(device)
    prefetch = _check_prefetch(prefetch)
    if network in _streaming:
        raise InvalidInputError("stream_blocks: this network is already being streamed")
    blocks = streamed_blocks(network)
    pin = device.type in _SIDE_STREAM_DEVICE_TYPES if pin_memory is None else pin_memory
    resident = _slots(_resident_modules(network, blocks))
    streamer: BlockStreamer | None = None
    handles: list[torch.utils.hooks.RemovableHandle] = []
    _streaming.add(network)
    try:
        streamer = BlockStreamer(blocks, device, prefetch, pin)
        copies = {id(slot.master): slot.master.detach().to(device, copy=True) for slot in resident}
        for slot in resident:
            slot.put(_as_entry(slot, copies[id(slot.master)]))
        handles = _hooks(blocks, streamer)
        yield streamer
    finally:
        for handle in handles:
            handle.remove()
        for slot in resident:
            slot.put(slot.master)
        try:
            if streamer is not None:
                streamer.close()
        finally:
            _streaming.discard(network)
            release = getattr(network, "release_device_caches", None)
            if release is not None:  # tables the network cached on the device during the context
                release()
