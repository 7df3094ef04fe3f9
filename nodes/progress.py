"""Progress and interrupts: one ComfyUI progress bar per node, advanced by the library's callbacks.

Every advance first checks ComfyUI's interrupt flag, so a Cancel takes effect within one sampling step or one
feature-extraction chunk. A node with several stages (frames, CLIP, Synchformer, text) splits its bar into
consecutive ranges, one per stage, each fed by a ``(done, total)`` callback.
"""

from __future__ import annotations

from collections.abc import Callable

import comfy.model_management as mm
import comfy.utils

ChunkCallback = Callable[[int, int], None]


def check_interrupt() -> None:
    """Raise ComfyUI's InterruptProcessingException if the user pressed Cancel."""
    mm.throw_exception_if_processing_interrupted()


class NodeProgress:
    """A progress bar over ``total`` units; stages map their own ``(done, total)`` onto a slice of it."""

    def __init__(self, total: int) -> None:
        self.total = max(1, int(total))
        self.done = 0
        self._stage_end = 0
        self._bar = comfy.utils.ProgressBar(self.total)

    def set(self, done: int) -> None:
        check_interrupt()
        self.done = max(0, min(self.total, int(done)))
        self._bar.update_absolute(self.done, self.total)

    def advance(self, units: int = 1) -> None:
        self.set(self.done + units)

    def stage(self, units: int) -> ChunkCallback:
        """A ``(done, total)`` callback for the next ``units`` of the bar (its own total may differ).

        Stages are consecutive: each begins where the previous one's range ends, whatever it reported.
        """
        start = self._stage_end
        self._stage_end = min(self.total, start + units)

        def report(done: int, total: int) -> None:
            fraction = done / total if total > 0 else 1.0
            self.set(start + round(units * min(max(fraction, 0.0), 1.0)))

        return report

    def finish(self) -> None:
        if self.done < self.total:
            self.set(self.total)
