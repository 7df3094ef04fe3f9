"""Checks of a run's output paths, made before any model is loaded.

A run that fails only when it writes, after minutes of generation, wastes the user's time; one that writes over
its own input destroys data. So the CLI and the mux node ask here first: is the path a file name we can write
in a folder that takes new files, in a format we can write, holding a video we can copy, and is it none of the
run's inputs or other outputs. Each answer comes from the system itself (``os.access``, a file created and
removed, ``os.path.samefile``, FFmpeg's codec tables), never from guessing.

Every check raises :class:`~..errors.InvalidInputError` whose message starts with ``option`` and the path, so
the caller names its own input: the CLI passes ``"--out"`` or ``"--audio-out"``, the node its input's name.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import InvalidInputError
from .audio import AUDIO_FILE_FORMATS
from .muxing import CONTAINER_EXTENSIONS, copy_problem
from .sources import MediaSource
from .staging import create_hidden_file, same_file

PathLike = str | os.PathLike[str]

# Output file extensions (with the dot, lower case) -> write_audio format / mux container.
AUDIO_SUFFIXES: dict[str, str] = {f".{name}": name for name in AUDIO_FILE_FORMATS}
VIDEO_SUFFIXES: dict[str, str] = {f".{ext}": container for ext, container in CONTAINER_EXTENSIONS.items()}

_DEFAULT_NAME_MAX = 255  # bytes per file name on every common file system, when the system does not say


def _where(option: str, path: PathLike) -> str:
    return f"{option} '{os.fspath(path)}'"


def _suffix_list(suffixes: Mapping[str, str]) -> str:
    return ", ".join(suffixes)


def audio_format_for(path: PathLike, option: str) -> str:
    """The :func:`~.audio.write_audio` format that ``path``'s extension asks for."""
    suffix = Path(path).suffix.lower()
    if suffix not in AUDIO_SUFFIXES:
        raise InvalidInputError(
            f"{_where(option, path)}: not an audio file name that can be written; end it in one of "
            f"{_suffix_list(AUDIO_SUFFIXES)}"
        )
    return AUDIO_SUFFIXES[suffix]


def video_container_for(path: PathLike, option: str) -> str:
    """The container (a key of ``muxing.CONTAINERS``) that ``path``'s extension asks for."""
    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise InvalidInputError(
            f"{_where(option, path)}: not a video file name that can be written; end it in one of "
            f"{_suffix_list(VIDEO_SUFFIXES)}"
        )
    return VIDEO_SUFFIXES[suffix]


def check_stream_copy(video: MediaSource, container: str, option: str, path: PathLike | None = None) -> None:
    """Refuse a ``container`` output that cannot hold ``video``'s video stream as it is (h264 in webm).

    The picture of an input file is copied, never re-encoded, so the output container must accept its codec;
    the message names the containers that do. ``path`` is the output named in the message (optional).
    """
    problem = copy_problem(video, container)
    if problem is not None:
        where = _where(option, path) if path is not None else option
        raise InvalidInputError(f"{where}: {problem}")


def check_writable_folder(folder: PathLike, option: str, path: PathLike | None = None) -> Path:
    """Refuse a folder that does not take new files; returns it.

    ``os.access`` answers for permissions and read-only mounts, but not for everything (root passes it
    everywhere, and virtual file systems such as /proc refuse files whatever it says), so a hidden file is also
    created and removed there, as the writers will do.
    """
    folder = Path(folder)
    where = _where(option, path if path is not None else folder)
    if not folder.is_dir():
        raise InvalidInputError(f"{where}: the folder '{folder}' does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidInputError(f"{where}: the folder '{folder}' is not writable; choose a folder you can write to")
    try:
        probe = create_hidden_file(folder, "mmaudio-write-test", ".tmp")
    except OSError as exc:
        raise InvalidInputError(
            f"{where}: the system does not allow creating files in the folder '{folder}' "
            f"({exc.strerror or exc}); choose a folder you can write to"
        ) from exc
    with contextlib.suppress(OSError):
        probe.unlink()
    return folder


def _name_max(folder: Path) -> int:
    """The longest file name (in bytes) ``folder``'s file system takes."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), or no answer for this folder
        return _DEFAULT_NAME_MAX


def _nearest_existing(folder: Path) -> Path:
    """``folder`` or its nearest existing ancestor (what a writer that creates missing folders starts from)."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def check_output_path(path: PathLike, option: str, *, create_parents: bool = False) -> Path:
    """Refuse an output path that cannot be written; returns it as a ``Path``.

    Refused: a parent that is missing (unless ``create_parents``: then the nearest existing ancestor must take
    new folders) or is not a folder, a name too long for its file system, an existing folder, anything existing
    that is not a regular file (a device, a pipe), a read-only file, and a folder that does not take new files.
    An existing regular file is fine: it is replaced, only once the new one is complete.
    """
    path = Path(path)
    where = _where(option, path)
    try:
        folder = _output_folder(path, where, create_parents)
        if len(os.fsencode(path.name)) > _name_max(folder):
            raise InvalidInputError(f"{where}: the file name is longer than its file system allows; shorten it")
        _check_existing(path, where)
    except OSError as exc:  # what the system says when it cannot even look (a folder without access, ...)
        raise InvalidInputError(f"{where}: cannot be used as an output ({exc.strerror or exc})") from exc
    check_writable_folder(folder, option, path)
    return path


def _output_folder(path: Path, where: str, create_parents: bool) -> Path:
    """The existing folder the output will be created in (or its folders, with ``create_parents``)."""
    folder = path.parent
    if not folder.exists():
        if not create_parents:
            raise InvalidInputError(f"{where}: the folder '{folder}' does not exist; create it first")
        folder = _nearest_existing(folder)
    if not folder.is_dir():
        raise InvalidInputError(f"{where}: '{folder}' is not a folder")
    return folder


def _check_existing(path: Path, where: str) -> None:
    """Refuse what already exists at ``path`` unless it is a regular file this process may replace."""
    if path.is_dir():
        raise InvalidInputError(f"{where} is a folder; give a file name (in that folder, or elsewhere)")
    if path.exists() and not path.is_file():
        raise InvalidInputError(f"{where} exists and is not a regular file; give a file name")
    if path.is_file() and not os.access(path, os.W_OK):
        raise InvalidInputError(f"{where} exists and is read-only; make it writable or choose another name")


def check_not_an_input(path: PathLike, option: str, inputs: Mapping[str, PathLike]) -> None:
    """Refuse an output that is one of the run's inputs (``inputs``: option name -> path)."""
    for input_option, source in inputs.items():
        if same_file(path, source):
            raise InvalidInputError(
                f"{_where(option, path)} is the same file as the input {_where(input_option, source)}; "
                "an output never replaces an input: choose another name"
            )


def check_distinct_outputs(outputs: Sequence[tuple[str, PathLike]], inputs: Mapping[str, PathLike]) -> None:
    """Refuse outputs of one run (``(option, path)`` pairs) that are the same file, or one of the inputs.

    E.g. ``--out a.mp4 --audio-out a.mp4``, numbered outputs of several samples that meet another output, or a
    numbered output that is the input video.
    """
    for index, (option, path) in enumerate(outputs):
        check_not_an_input(path, option, inputs)
        for other_option, other in outputs[index + 1 :]:
            if same_file(path, other):
                raise InvalidInputError(
                    f"{_where(option, path)} and {_where(other_option, other)} are the same file; "
                    "every output needs its own name"
                )


def numbered_paths(path: PathLike, count: int) -> list[Path]:
    """The outputs of ``count`` samples: ``path`` itself for one, ``<stem>_00<suffix>``, ``_01``... for more."""
    path = Path(path)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{index:02d}{path.suffix}") for index in range(count)]


def check_audio_output(path: PathLike, option: str, *, inputs: Mapping[str, PathLike] | None = None,
                       create_parents: bool = False) -> str:
    """All checks of one audio output: a writable path, an audio extension, not an input; returns the format."""
    fmt = audio_format_for(path, option)
    check_output_path(path, option, create_parents=create_parents)
    check_not_an_input(path, option, inputs or {})
    return fmt


def check_video_output(path: PathLike, option: str, video: MediaSource, *,
                       inputs: Mapping[str, PathLike] | None = None, create_parents: bool = False) -> str:
    """All checks of one video output that copies ``video``'s picture: a writable path, a video extension whose
    container holds ``video``'s codec, not an input; returns the container."""
    container = video_container_for(path, option)
    check_output_path(path, option, create_parents=create_parents)
    check_not_an_input(path, option, inputs or {})
    check_stream_copy(video, container, option, path)
    return container
