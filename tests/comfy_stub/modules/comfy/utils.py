"""Stand-in for ``comfy.utils``: the ProgressBar and its global hook (as ComfyUI's server installs one)."""

from __future__ import annotations

from collections.abc import Callable

PROGRESS_BAR_HOOK: Callable | None = None


def set_progress_bar_global_hook(function: Callable | None) -> None:
    global PROGRESS_BAR_HOOK
    PROGRESS_BAR_HOOK = function


class ProgressBar:
    def __init__(self, total, node_id=None) -> None:
        self.total = total
        self.current = 0
        self.hook = PROGRESS_BAR_HOOK
        self.node_id = node_id

    def update_absolute(self, value, total=None, preview=None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        if self.hook is not None:
            self.hook(self.current, self.total, preview, node_id=self.node_id)

    def update(self, value) -> None:
        self.update_absolute(self.current + value)
