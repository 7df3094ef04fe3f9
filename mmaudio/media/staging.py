"""Atomic output: files are written under hidden temporary names beside their final paths.

Only when every file of one call is complete are they renamed into place; on any failure (an exception, a
cancel, Ctrl-C) all temporary files are removed. So a crash, a bad input found late, or an interrupted run never
leaves a half-written video where a user (or a file browser, or ComfyUI's output list) would take it for a
result, and an existing file of the same name stays as it was until the new one is complete.

Temporary files are created with mode 0o666 and left to the process umask (and any default ACL of the folder),
exactly like a file a program creates directly. ``tempfile.mkstemp`` would make them 0o600, and the rename would
carry that mode to the result: an output nobody else could read.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import InvalidInputError

_NEW_FILE_MODE = 0o666  # what open() and most programs ask for; the umask takes away from it
_NAME_KEEP = 64  # characters of the final name kept in a temporary name (the name stays within NAME_MAX)
_ATTEMPTS = 100  # random names tried before giving up (a collision needs 2**32 names in one folder)


def create_hidden_file(folder: Path, name: str, suffix: str) -> Path:
    """Create a new, empty hidden file ``.<name>.<random><suffix>`` in ``folder``, with the mode of a new file.

    Raises ``OSError`` as the system reports it (no folder, no permission, read-only file system).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(_ATTEMPTS):
        candidate = folder / f".{name[:_NAME_KEEP]}.{secrets.token_hex(4)}{suffix}"
        try:
            descriptor = os.open(candidate, flags, _NEW_FILE_MODE)
        except FileExistsError:
            continue
        os.close(descriptor)
        return candidate
    raise FileExistsError(f"no free temporary name for '{name}' in '{folder}' after {_ATTEMPTS} tries")


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file: the same resolved path (symlinks followed), or, when both exist, the
    same file by the system's answer (hard links, case-insensitive file systems)."""
    if os.path.normcase(Path(a).resolve()) == os.path.normcase(Path(b).resolve()):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): no link can join them
        return False


def _temp_beside(path: Path, suffix: str) -> Path:
    """A new temporary file in ``path``'s folder (created, with its parents, when missing)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return create_hidden_file(path.parent, path.name, suffix)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot write '{path}': the folder '{path.parent}' does not accept new files ({exc.strerror or exc})"
        ) from exc


class StagedFiles:
    """Temporary files of one write operation; see :func:`staged_files`."""

    def __init__(self, protect: Iterable[str | os.PathLike[str]] = ()) -> None:
        self._staged: list[tuple[Path, Path]] = []
        self._scratch: list[Path] = []
        self._protected = [Path(p) for p in protect]

    def stage(self, final: Path) -> Path:
        """A temporary path that becomes ``final`` when the operation succeeds (never a protected file)."""
        for protected in self._protected:
            if same_file(final, protected):
                raise InvalidInputError(
                    f"'{final}' is the input '{protected}' itself: an output never replaces its input; choose "
                    "another output name"
                )
        temp = _temp_beside(final, ".part")
        self._staged.append((temp, final))
        return temp

    def scratch(self, near: Path, suffix: str = ".tmp") -> Path:
        """A temporary path in ``near``'s folder that is removed whatever happens (intermediate files)."""
        temp = _temp_beside(near, suffix)
        self._scratch.append(temp)
        return temp

    def commit(self) -> None:
        """Rename every staged file onto its final path (each rename replaces an existing file atomically)."""
        for temp, final in self._staged:
            try:
                os.replace(temp, final)
            except OSError as exc:
                raise InvalidInputError(
                    f"cannot put the finished file at '{final}' ({exc.strerror or exc})"
                ) from exc

    def cleanup(self) -> None:
        """Remove every temporary file still there (all of them after a failure, none after a commit)."""
        for temp in [*self._scratch, *(t for t, _ in self._staged)]:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()


@contextlib.contextmanager
def staged_files(protect: Iterable[str | os.PathLike[str]] = ()) -> Iterator[StagedFiles]:
    """Collect temporary outputs; rename them into place if the block succeeds, delete them in any case.

    ``protect``: the operation's input files, which no output may replace (under any name or link).
    """
    staged = StagedFiles(protect)
    try:
        yield staged
        staged.commit()
    finally:
        staged.cleanup()
