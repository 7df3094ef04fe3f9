"""Atomic output: files are written under hidden temporary names beside their final paths.

Only when every file of one call is complete are they renamed into place; on any failure all temporary files
are removed. So a crash, a bad input found late, or an interrupted run never leaves a half-written video where
a user (or a file browser, or ComfyUI's output list) would take it for a result.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


class StagedFiles:
    """Temporary files of one write operation; see :func:`staged_files`."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []
        self._scratch: list[Path] = []

    def stage(self, final: Path) -> Path:
        """A temporary path that becomes ``final`` when the operation succeeds."""
        temp = _temp_beside(final, ".part")
        self._staged.append((temp, final))
        return temp

    def scratch(self, near: Path, suffix: str = ".tmp") -> Path:
        """A temporary path in ``near``'s folder that is removed whatever happens (intermediate files)."""
        temp = _temp_beside(near, suffix)
        self._scratch.append(temp)
        return temp

    def commit(self) -> None:
        for temp, final in self._staged:
            os.replace(temp, final)

    def cleanup(self) -> None:
        for temp in [*self._scratch, *(t for t, _ in self._staged)]:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()


def _temp_beside(path: Path, suffix: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def staged_files() -> Iterator[StagedFiles]:
    """Collect temporary outputs; rename them into place if the block succeeds, delete them in any case."""
    staged = StagedFiles()
    try:
        yield staged
        staged.commit()
    finally:
        staged.cleanup()
