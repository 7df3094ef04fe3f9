"""Stand-in for ``comfy_api.latest``: the extension base class, ``io``, ``ui`` and the video component types."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from . import _io as io
from . import _ui as ui


class ComfyExtension(ABC):
    async def on_load(self) -> None:
        return None

    @abstractmethod
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        """The node classes this extension provides."""


@dataclass
class VideoComponents:
    images: Any
    frame_rate: Fraction
    audio: Any = None
    metadata: dict | None = None


class VideoFromComponents:
    """A VIDEO built from frames, an optional AUDIO and a frame rate (``get_components`` returns them)."""

    def __init__(self, components: VideoComponents) -> None:
        self._components = components

    def get_components(self) -> VideoComponents:
        return self._components

    def get_dimensions(self) -> tuple[int, int]:
        return int(self._components.images.shape[2]), int(self._components.images.shape[1])


class Input:
    Video = object


class InputImpl:
    VideoFromComponents = VideoFromComponents


class Types:
    VideoComponents = VideoComponents


__all__ = ["ComfyExtension", "Input", "InputImpl", "Types", "io", "ui"]
