"""Stand-in for ``comfy_api.latest.ui``: the result records that output nodes return to the frontend."""

from __future__ import annotations

from typing import Any

from ._io import FolderType


class SavedResult(dict):
    def __init__(self, filename: str, subfolder: str, type: FolderType) -> None:
        super().__init__(filename=filename, subfolder=subfolder, type=type.value)


class PreviewVideo:
    def __init__(self, values: list[SavedResult | dict], **kwargs: Any) -> None:
        self.values = values

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.values, "animated": (True,)}


class PreviewAudio:
    def __init__(self, audio: dict, cls: Any = None, **kwargs: Any) -> None:
        self.audio = audio

    def as_dict(self) -> dict[str, Any]:
        return {"audio": []}
