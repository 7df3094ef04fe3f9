"""What differs between the hosts that drive the engine: where models compute, progress, cancellation.

The engine owns the chain; a host (the ComfyUI nodes, the command line, the benchmark) owns the device. Before a
stage computes, the engine asks the host's :class:`Runtime` to bring that stage's models to their compute device,
telling it how many bytes of activations the stage will need (ComfyUI hands both to its memory manager; the
command line moves the models, or keeps them resident). Progress goes to the runtime too, as (stage, done,
total); a runtime cancels a run by raising from :meth:`Runtime.progress` (ComfyUI's interrupt, Ctrl-C).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import torch
from torch import nn

from ..model.block_streaming import can_stream, stream_blocks

M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class Placed(Generic[M]):
    """A model and where it computes: ``device`` and activation ``dtype``; ``handle`` is the host's own object
    for it (ComfyUI's ModelPatcher), which only the host's runtime looks at."""

    module: M
    device: torch.device
    dtype: torch.dtype
    handle: Any = None


class Runtime(Protocol):
    """The host side of a generation (see the module docstring)."""

    def stage(self, name: str, models: Sequence[Placed], memory_required: int = 0,
              ) -> contextlib.AbstractContextManager[None]:
        """A block during which ``models`` are on their compute device (``memory_required``: activation bytes
        the stage needs beyond the weights). On leaving, the host may move them away again."""

    def plan(self, units: Mapping[str, int]) -> None:
        """The sub-stages a call will report, and how many units each has, before the first report."""

    def progress(self, stage: str, done: int, total: int) -> None:
        """``done`` of ``total`` units of ``stage``; raising here cancels the run."""


class DirectRuntime:
    """For one process that owns its device: models stay where they are, or with ``offload`` wait on the CPU and
    visit the device only for their stage (the device then holds one stage's models at a time). With
    ``low_vram`` (implies ``offload``) the large models, the flow network and CLIP, do not visit whole: their
    blocks are brought to the device one at a time while they run (``mmaudio.model.block_streaming``)."""

    def __init__(self, device: torch.device | str = "cpu", *, offload: bool = False, low_vram: bool = False,
                 progress: Any = None) -> None:
        self.device = torch.device(device)
        self.offload = offload or low_vram
        self.low_vram = low_vram
        self._report = progress

    @contextlib.contextmanager
    def stage(self, name: str, models: Sequence[Placed], memory_required: int = 0) -> Iterator[None]:
        if not self.offload:
            yield
            return
        streamed = [p for p in models if self.low_vram and can_stream(p.module)]
        moved = [p for p in models if not any(p is s for s in streamed)]
        with contextlib.ExitStack() as stack:
            try:
                for placed in moved:
                    placed.module.to(placed.device)
                for placed in streamed:
                    stack.enter_context(stream_blocks(placed.module, placed.device))
                yield
            finally:  # also after an error or an interrupt: the next stage finds the device free
                stack.close()
                for placed in moved:
                    placed.module.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    def plan(self, units: Mapping[str, int]) -> None:
        return None

    def progress(self, stage: str, done: int, total: int) -> None:
        if self._report is not None:
            self._report(stage, done, total)
