"""Fetching published weights from the Hugging Face Hub, only when the caller asks, and checking them.

Nothing here runs at import time, and nothing downloads unless :func:`download_known_file` is called. A download
goes to a hidden staging folder inside the destination folder, is checked (size, then SHA-256 and MD5 where
published; JSON fields for small config files) and only then moved into place, so a failed or tampered
download never leaves a file that a loader could pick up. The transfer runs in a child process (the script
``_worker/hub_download.py``), so that a cancel stops it at once. ``HF_HUB_OFFLINE=1`` is honoured: an offline
request fails at once with a message naming the file, where to get it and where to put it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

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
    """The download process failed (as opposed to a progress callback raising); its text is shown to users."""


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


_WORKER_SCRIPT = Path(__file__).resolve().parent / "_worker" / "hub_download.py"
_STOP_WAIT_S = 2.0  # after terminate(), before kill()
_NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # Windows: no console window pops up for the worker


def _failure_summary(type_name: str, message: str) -> str:
    lines = message.strip().splitlines()
    return f"{type_name}: {lines[0][:300] if lines else ''}"


def _worker_request(entry: KnownFile, staging: Path, *, endpoint: str | None, token: str | bool | None,
                    cache_dir: str | os.PathLike[str] | None) -> bytes:
    """The worker's request line; the token goes here, never on its command line (which any user can read)."""
    request: dict[str, Any] = {"repo_id": entry.repo_id, "filename": entry.filename, "revision": entry.revision,
                               "local_dir": str(staging), "endpoint": endpoint}
    if token is not None:
        request["token"] = token
    if cache_dir is not None:
        request["cache_dir"] = os.fspath(cache_dir)
    return json.dumps(request).encode("utf-8") + b"\n"


def _start_worker(request: bytes, stdout: IO[bytes], stderr: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start the download process with our environment (proxies, HF_HOME...) and hand it ``request``.

    Not ``multiprocessing``: inside ComfyUI, spawn would import ComfyUI's main module again and fork is unsafe with
    threads and CUDA. Output goes to files, which never fill up and block it as a pipe could. Its stdin stays open:
    the end of it tells the worker that we are gone.
    """
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # progress is reported through ``progress``
    try:
        process = subprocess.Popen([sys.executable, str(_WORKER_SCRIPT)], stdin=subprocess.PIPE, stdout=stdout,
                                   stderr=stderr, env=env, creationflags=_NO_WINDOW)
    except OSError as error:
        raise _DownloadFailedError(_failure_summary(type(error).__name__, str(error))) from error
    assert process.stdin is not None
    with contextlib.suppress(OSError):  # it ended at once: its exit code and error output say why
        process.stdin.write(request)
        process.stdin.flush()
    return process


def _wait_with_progress(process: subprocess.Popen[bytes], staging: Path, entry: KnownFile,
                        progress: Progress | None) -> None:
    """Wait for the worker, reporting the staging folder's growth from this thread (ComfyUI expects that)."""
    total = entry.expected_bytes
    while True:
        try:
            process.wait(_POLL_S)
            return
        except subprocess.TimeoutExpired:
            if progress is not None:
                progress("download", _staging_bytes(staging), total)


def _stop_worker(process: subprocess.Popen[bytes]) -> None:
    """End the worker now: terminate it, and kill it if it is still there after a moment."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(_STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _close_stdin(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()


def _read_text(handle: IO[bytes]) -> str:
    handle.seek(0)
    return handle.read().decode("utf-8", errors="replace")


def _last_report(output: str) -> dict[str, Any] | None:
    """The worker's result line: the last line of its stdout that is a JSON object with ``ok`` (a library that
    printed something before it does not matter)."""
    for line in reversed(output.splitlines()):
        with contextlib.suppress(ValueError):
            report = json.loads(line)
            if isinstance(report, dict) and "ok" in report:
                return report
    return None


def _worker_result(process: subprocess.Popen[bytes], stdout: IO[bytes], stderr: IO[bytes], staging: Path) -> Path:
    """The downloaded file from the ended worker's report; :class:`_DownloadFailedError` for any failure."""
    report = _last_report(_read_text(stdout))
    if report is None:  # killed, crashed, or the interpreter could not start it
        errors = _read_text(stderr).strip().splitlines()
        detail = f"; its last message: {errors[-1][:300]}" if errors else ""
        raise _DownloadFailedError(f"the download process ended (exit code {process.returncode}) without a "
                                   f"result{detail}")
    if not report["ok"]:
        raise _DownloadFailedError(_failure_summary(str(report.get("type")), str(report.get("message", ""))))
    path = Path(str(report.get("path")))
    if not path.resolve().is_relative_to(staging.resolve()):
        raise _DownloadFailedError(f"the download process reported {path}, which is not in {staging}")
    return path


def _download_in_worker(entry: KnownFile, staging: Path, *, endpoint: str | None, token: str | bool | None,
                        cache_dir: str | os.PathLike[str] | None, progress: Progress | None) -> Path:
    """Download ``entry`` into ``staging`` in a child process; returns the downloaded file.

    A process, not a thread, because only a process can be stopped: when ``progress`` raises (a cancel), the
    transfer is ended at once, ``staging`` removed, and the exception passed on unchanged.
    """
    request = _worker_request(entry, staging, endpoint=endpoint, token=token, cache_dir=cache_dir)
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        process = _start_worker(request, stdout, stderr)
        try:
            _wait_with_progress(process, staging, entry, progress)
        except BaseException:
            _stop_worker(process)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            _close_stdin(process)
        return _worker_result(process, stdout, stderr, staging)


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
    both cases nothing is left in ``folder``. An exception raised by ``progress`` (a cancel) ends the transfer
    within about a second, removes its partial data and propagates unchanged.
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
            fetched = _download_in_worker(entry, staging, endpoint=endpoint, token=token, cache_dir=cache_dir,
                                          progress=progress)
        except _DownloadFailedError as failed:
            raise missing_weights_error(entry, folder, f"downloading it failed: {failed}") from failed
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
