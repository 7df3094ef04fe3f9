"""Fetching published weights from the Hugging Face Hub, only when the caller asks, and checking them.

Nothing here runs at import time, and nothing downloads unless :func:`download_known_file` is called. A download
goes to a hidden staging folder inside the destination folder, is checked (size, then SHA-256 and MD5 where
published; JSON fields for small config files) and only then moved into place, so a failed or tampered
download never leaves a file that a loader could pick up. ``HF_HUB_OFFLINE=1`` is honoured: an offline
request fails at once with a message naming the file, where to get it and where to put it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import MMAudioError, WrongCheckpointError
from .known_files import KnownFile, known_file

# progress(stage, done, total): stage is "download" or "verify"; total is None when unknown.
Progress = Callable[[str, int, "int | None"], None]

_POLL_S = 0.25
_CHUNK = 8 * 1024 * 1024
SIDECAR_SUFFIX = ".sha256"


class MissingWeightsError(MMAudioError, FileNotFoundError):
    """A weights file is not on disk and could not (or may not) be downloaded."""


class ChecksumMismatchError(WrongCheckpointError):
    """A downloaded or local file does not match its published size or checksum."""


class _DownloadFailedError(Exception):
    """Carries an error raised by the download worker (as opposed to one raised by a progress callback)."""


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no network access, read now."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def missing_file_message(entry: KnownFile, folder: str | os.PathLike[str], reason: str = "") -> str:
    """Where a missing file comes from and where it has to go, for users."""
    target = Path(folder) / entry.local_path
    why = f" ({reason})" if reason else ""
    return (
        f"'{entry.name}' is missing{why}. It is published in the Hugging Face repository {entry.repo_id} as "
        f"'{entry.filename}' ({entry.page_url}). Download it and put it at {target}"
        + ("" if entry.local_path == entry.name else f" (folder {target.parent})") + "."
    )


def missing_weights_error(
    entry: KnownFile | str, folder: str | os.PathLike[str], reason: str = ""
) -> MissingWeightsError:
    """A ready :class:`MissingWeightsError` for ``entry`` (a catalogue entry or its id)."""
    entry = known_file(entry) if isinstance(entry, str) else entry
    return MissingWeightsError(missing_file_message(entry, folder, reason))


# ---- verification ------------------------------------------------------------------------------------------------

def file_digests(path: str | os.PathLike[str], progress: Progress | None = None) -> tuple[str, str]:
    """(sha256, md5) of ``path`` in one streaming pass."""
    path = Path(path)
    total = path.stat().st_size
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    done = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress("verify", done, total)
    return sha.hexdigest(), md5.hexdigest()


def read_sidecar(path: Path) -> str | None:
    """The SHA-256 recorded beside ``path`` after an unchecked download, if any."""
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    try:
        text = sidecar.read_text(encoding="utf-8").split()
    except OSError:
        return None
    return text[0].lower() if text and len(text[0]) == 64 else None


def _write_sidecar(path: Path, sha256: str) -> None:
    path.with_name(path.name + SIDECAR_SUFFIX).write_text(f"{sha256}  {path.name}\n", encoding="utf-8")


def verify_file(path: str | os.PathLike[str], entry: KnownFile, progress: Progress | None = None) -> str:
    """Check ``path`` against ``entry``; returns its SHA-256, raises :class:`ChecksumMismatchError` if wrong.

    Size first (cheap), then every published checksum; with none published, a sidecar written at download
    time is the reference. Small JSON files are checked by their required fields instead.
    """
    path = Path(path)
    actual = path.stat().st_size
    if not entry.size_matches(actual):
        expected = entry.size if entry.size is not None else f"about {entry.approx_size}"
        raise ChecksumMismatchError(
            f"'{path.name}' has {actual} bytes but the published {entry.name} has {expected}: the file is "
            f"incomplete or a different file. Full path: {path}"
        )
    if entry.json_fields:
        _verify_json(path, entry)
    sha256, md5 = file_digests(path, progress)
    expected_sha = entry.sha256 or read_sidecar(path)
    if expected_sha is not None and sha256 != expected_sha:
        raise ChecksumMismatchError(
            f"'{path.name}' has SHA-256 {sha256}, but {entry.name} from {entry.repo_id} has {expected_sha}: the "
            f"file is damaged or not the published one. Full path: {path}"
        )
    if entry.md5 is not None and entry.sha256 is None and md5 != entry.md5:
        raise ChecksumMismatchError(
            f"'{path.name}' has MD5 {md5}, but {entry.name} has {entry.md5}. Full path: {path}"
        )
    return sha256


def _verify_json(path: Path, entry: KnownFile) -> None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ChecksumMismatchError(f"'{path.name}' is not valid JSON ({error}). Full path: {path}") from None
    wrong = {k: data.get(k) for k, v in entry.json_fields.items() if not isinstance(data, dict) or data.get(k) != v}
    if wrong:
        raise ChecksumMismatchError(
            f"'{path.name}' is not the configuration of {entry.repo_id}: it has {wrong}, expected "
            f"{ {k: entry.json_fields[k] for k in wrong} }. Full path: {path}"
        )


# ---- download ------------------------------------------------------------------------------------------------------

_STAGING_PREFIX = ".mmaudio-download-"
_STALE_S = 24 * 3600


def _remove_stale_staging(folder: Path) -> None:
    """Remove staging folders a killed process left behind (a day old: no live download is that slow)."""
    now = time.time()
    for stale in folder.glob(f"{_STAGING_PREFIX}*"):
        with contextlib.suppress(OSError):
            if stale.is_dir() and now - stale.stat().st_mtime > _STALE_S:
                shutil.rmtree(stale, ignore_errors=True)


def _staging_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # a file renamed or removed while we look
                total += os.path.getsize(os.path.join(root, name))
    return total


def _hub_download(entry: KnownFile, staging: Path, *, endpoint: str | None, token: str | bool | None,
                  cache_dir: str | os.PathLike[str] | None) -> Path:
    from huggingface_hub import hf_hub_download  # imported on demand: never at import time of the library

    kwargs: dict[str, Any] = {"revision": entry.revision, "local_dir": staging, "endpoint": endpoint}
    if token is not None:
        kwargs["token"] = token
    if cache_dir is not None:
        kwargs["cache_dir"] = cache_dir
    return Path(hf_hub_download(entry.repo_id, entry.filename, **kwargs))


def _run_with_progress(work: Callable[[], Path], staging: Path, entry: KnownFile,
                       progress: Progress | None) -> Path:
    """Run ``work`` in a thread while reporting the staging folder's growth from the calling thread.

    Progress callbacks therefore run in the caller's thread (ComfyUI's progress bar and interrupt check expect
    that); if a callback raises, the download is abandoned and its partial data removed when it ends.
    """
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["path"] = work()
        except BaseException as error:  # handed to the calling thread
            result["error"] = error

    thread = threading.Thread(target=target, name=f"mmaudio-download-{entry.name}", daemon=True)
    thread.start()
    total = entry.expected_bytes
    try:
        while thread.is_alive():
            thread.join(_POLL_S)
            if progress is not None and thread.is_alive():
                progress("download", _staging_bytes(staging), total)
    except BaseException:
        # The caller stopped us (interrupt): let the worker finish in the background, then clear its files.
        def cleanup() -> None:
            thread.join()
            shutil.rmtree(staging, ignore_errors=True)

        threading.Thread(target=cleanup, daemon=True).start()
        raise
    if "error" in result:
        raise _DownloadFailedError() from result["error"]
    return result["path"]


def download_known_file(
    entry: KnownFile | str,
    folder: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    with_companions: bool = True,
) -> Path:
    """Fetch ``entry`` (a catalogue entry or its id) into ``folder`` and check it; returns the local path.

    An existing file of the right size is kept as it is (no network; :func:`verify_file` checks it fully); one of
    another size is never overwritten unless ``force`` is given, which also downloads again. Companion
    files (BigVGAN's config.json) are fetched too. Raises :class:`MissingWeightsError` when offline or when the
    download fails, :class:`ChecksumMismatchError` when the downloaded bytes are not the published file; in
    both cases nothing is left in ``folder``.
    """
    entry = known_file(entry) if isinstance(entry, str) else entry
    folder = Path(folder)
    target = folder / entry.local_path
    if with_companions:
        for companion in entry.companions:
            download_known_file(companion, folder, progress=progress, endpoint=endpoint, token=token,
                                cache_dir=cache_dir, force=force, with_companions=False)
    if target.is_file() and not force:
        if entry.size_matches(target.stat().st_size):
            return target
        raise ChecksumMismatchError(
            f"{target} exists but is not the published {entry.name} ({target.stat().st_size} bytes, expected "
            f"{entry.size if entry.size is not None else f'about {entry.approx_size}'}). It is left untouched: "
            "delete or rename it to download the published file, or ask for a forced download."
        )
    if hub_offline():
        raise missing_weights_error(entry, folder, "HF_HUB_OFFLINE is set, so it is not downloaded")

    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(folder)
    staging = folder / f"{_STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        if progress is not None:
            progress("download", 0, entry.expected_bytes)
        try:
            fetched = _run_with_progress(
                lambda: _hub_download(entry, staging, endpoint=endpoint, token=token, cache_dir=cache_dir),
                staging, entry, progress,
            )
        except _DownloadFailedError as failed:
            error = failed.__cause__
            if not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit: not ours to translate
                raise error from None
            lines = str(error).strip().splitlines()
            reason = f"downloading it failed: {type(error).__name__}: {lines[0][:300] if lines else ''}"
            raise missing_weights_error(entry, folder, reason) from error
        size = fetched.stat().st_size
        if progress is not None:
            progress("download", size, size)
        sha256 = verify_file(fetched, entry, progress)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(fetched, target)
        if entry.sha256 is None and not entry.json_fields:
            _write_sidecar(target, sha256)
        return target
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def find_known_file(entry: KnownFile | str, folders: list[str | os.PathLike[str]]) -> Path | None:
    """The first ``folder/local_path`` of ``entry`` that exists, or ``None`` (no checks, no network)."""
    entry = known_file(entry) if isinstance(entry, str) else entry
    for folder in folders:
        candidate = Path(folder) / entry.local_path
        if candidate.is_file():
            return candidate
    return None
