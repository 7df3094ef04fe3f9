"""Fetching published files through huggingface_hub against a fake Hub on 127.0.0.1 (no real network):
success, checksum and size mismatches, offline mode, missing files, progress and interruption, and the
catalogue's own consistency."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from mmaudio.weights import (
    KINDS,
    KNOWN_FILES,
    ChecksumMismatchError,
    KnownFile,
    MissingWeightsError,
    download_known_file,
    files_for_variant,
    find_known_file,
    known_file,
    known_files,
    verify_file,
)
from mmaudio.weights import download as download_module
from mmaudio.weights.download import SIDECAR_SUFFIX, read_sidecar

COMMIT = "0123456789abcdef0123456789abcdef01234567"
WORKER_SCRIPT = download_module._WORKER_SCRIPT


@dataclasses.dataclass
class Transfer:
    """One GET of a file body on the fake Hub: how much was sent, and whether the client went away part-way."""

    size: int
    sent: int = 0
    broken: bool = False
    ended: threading.Event = dataclasses.field(default_factory=threading.Event)


class FakeHub:
    """A minimal Hub: HEAD and GET on /<repo>/resolve/<revision>/<path>, as huggingface_hub calls them."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], bytes] = {}
        self.requests: list[str] = []
        self.authorizations: list[str | None] = []
        self.transfers: list[Transfer] = []
        self.delay_s = 0.0  # per chunk of the body, to make a download take a while
        self.chunk_size: int | None = None  # bytes per chunk of the body; None: an eighth of it
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        server.daemon_threads = True
        self.server = server
        self.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, repo_id: str, filename: str, data: bytes) -> None:
        self.files[repo_id, filename] = data

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _lookup(self) -> bytes | None:
                hub.requests.append(f"{self.command} {self.path}")
                hub.authorizations.append(self.headers.get("Authorization"))
                parts = unquote(self.path.split("?", 1)[0]).lstrip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return None
                return hub.files.get(("/".join(parts[:2]), "/".join(parts[4:])))

            def _headers(self, data: bytes | None) -> None:
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()

            def do_HEAD(self) -> None:
                self._headers(self._lookup())

            def do_GET(self) -> None:
                data = self._lookup()
                self._headers(data)
                if data is None:
                    return
                transfer = Transfer(len(data))
                hub.transfers.append(transfer)
                try:
                    self._send_body(data, transfer)
                except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                    transfer.broken = True  # the client closed the connection part-way
                    self.close_connection = True
                finally:
                    transfer.ended.set()

            def _send_body(self, data: bytes, transfer: Transfer) -> None:
                step = hub.chunk_size or max(1, len(data) // 8)
                for start in range(0, len(data), step):
                    chunk = data[start:start + step]
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    transfer.sent = start + len(chunk)
                    if hub.delay_s:
                        time.sleep(hub.delay_s)

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")  # else each download process asks the real Hub for a list
    fake = FakeHub()
    yield fake
    fake.close()


def fake_entry(data: bytes, *, name: str = "model.safetensors", publish_sha: bool = True, exact_size: bool = True,
               md5: bool = False, **changes: object) -> KnownFile:
    return KnownFile(
        id=name, repo_id="someone/weights", filename=f"folder/{name}", local_path=name, kind="vae", mode="44k",
        size=len(data) if exact_size else None, approx_size=None if exact_size else len(data),
        sha256=hashlib.sha256(data).hexdigest() if publish_sha else None,
        md5=hashlib.md5(data).hexdigest() if md5 else None, **changes,  # type: ignore[arg-type]
    )


def fetch(hub: FakeHub, entry: KnownFile | str, folder: Path, tmp_path: Path, **kwargs: object) -> Path:
    return download_known_file(entry, folder, endpoint=hub.endpoint, token=False, cache_dir=tmp_path / "hf-cache",
                               **kwargs)  # type: ignore[arg-type]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


def run_worker_after(prelude: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make downloads start a wrapper that runs ``prelude`` inside the download process, then the real worker
    (a monkeypatch in this process cannot reach into that one)."""
    wrapper = tmp_path / "worker_wrapper.py"
    wrapper.write_text(f"{prelude}\nimport runpy\nrunpy.run_path({str(WORKER_SCRIPT)!r}, run_name='__main__')\n")
    monkeypatch.setattr(download_module, "_WORKER_SCRIPT", wrapper)


# ---- success -----------------------------------------------------------------------------------------------------

def test_download_places_the_checked_file(hub: FakeHub, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    entry = fake_entry(data, md5=True)
    hub.add(entry.repo_id, entry.filename, data)
    folder = tmp_path / "models" / "mmaudio"
    calls: list[tuple[str, int, int | None]] = []
    path = fetch(hub, entry, folder, tmp_path, progress=lambda *a: calls.append(a))
    assert path == folder / "model.safetensors" and path.read_bytes() == data
    assert leftovers(folder) == ["model.safetensors"]  # no staging folder, no sidecar (checksum published)
    assert ("download", len(data), len(data)) in calls and calls[-1] == ("verify", len(data), len(data))
    assert any(r.startswith("GET /someone/weights/resolve/main/folder/model.safetensors") for r in hub.requests)

    stale = folder / ".mmaudio-download-0000"  # left by a killed process long ago
    stale.mkdir()
    os.utime(stale, (time.time() - 3 * 86400,) * 2)
    other = fake_entry(b"y" * 100, name="other.safetensors")
    hub.add(other.repo_id, other.filename, b"y" * 100)
    fetch(hub, other, folder, tmp_path)
    assert leftovers(folder) == ["model.safetensors", "other.safetensors"]

    hub.requests.clear()  # present and of the right size: nothing is fetched again
    assert fetch(hub, entry, folder, tmp_path) == path and hub.requests == []
    assert find_known_file(entry, [tmp_path / "elsewhere", folder]) == path


def test_unpublished_checksum_is_recorded_in_a_sidecar(hub: FakeHub, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    entry = fake_entry(data, publish_sha=False, exact_size=False)
    hub.add(entry.repo_id, entry.filename, data)
    folder = tmp_path / "models"
    path = fetch(hub, entry, folder, tmp_path)
    assert read_sidecar(path) == hashlib.sha256(data).hexdigest()
    assert (folder / f"model.safetensors{SIDECAR_SUFFIX}").read_text().endswith("  model.safetensors\n")
    assert verify_file(path, entry) == hashlib.sha256(data).hexdigest()
    path.write_bytes(os.urandom(len(data)))  # same size, other bytes: the sidecar catches it
    with pytest.raises(ChecksumMismatchError, match="SHA-256"):
        verify_file(path, entry)


def test_companion_config_is_fetched_and_checked_by_content(hub: FakeHub, tmp_path: Path) -> None:
    config_entry = known_file("bigvgan_v2_config.json")
    config = {**config_entry.json_fields, "resblock": "1", "hop_size": 512}
    hub.add(config_entry.repo_id, config_entry.filename, json.dumps(config).encode())
    data = os.urandom(10_000)
    generator = fake_entry(data, name="bigvgan_generator.pt", companions=("bigvgan_v2_config.json",))
    hub.add(generator.repo_id, generator.filename, data)
    folder = tmp_path / "models"
    fetch(hub, generator, folder, tmp_path)
    assert json.loads((folder / config_entry.local_path).read_text())["num_mels"] == 128
    assert (folder / "bigvgan_generator.pt").read_bytes() == data

    (folder / config_entry.local_path).unlink()
    hub.add(config_entry.repo_id, config_entry.filename, json.dumps({**config, "num_mels": 100}).encode())
    with pytest.raises(ChecksumMismatchError, match="num_mels"):
        fetch(hub, config_entry, folder, tmp_path)
    assert not (folder / config_entry.local_path).exists()


# ---- failures leave nothing behind -------------------------------------------------------------------------------

def test_an_existing_file_of_another_size_is_never_overwritten(hub: FakeHub, tmp_path: Path) -> None:
    data = os.urandom(10_000)
    entry = fake_entry(data)
    hub.add(entry.repo_id, entry.filename, data)
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / entry.local_path).write_bytes(b"my own fine-tune")
    with pytest.raises(ChecksumMismatchError, match="left untouched"):
        fetch(hub, entry, folder, tmp_path)
    assert (folder / entry.local_path).read_bytes() == b"my own fine-tune" and hub.requests == []
    assert fetch(hub, entry, folder, tmp_path, force=True).read_bytes() == data


def test_checksum_mismatch_is_an_error_and_leaves_no_file(hub: FakeHub, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    entry = fake_entry(data)
    hub.add(entry.repo_id, entry.filename, os.urandom(len(data)))  # same size, other content
    folder = tmp_path / "models"
    with pytest.raises(ChecksumMismatchError) as info:
        fetch(hub, entry, folder, tmp_path)
    assert entry.sha256 in str(info.value) and "model.safetensors" in str(info.value)
    assert leftovers(folder) == []


def test_size_mismatch_is_an_error_and_leaves_no_file(hub: FakeHub, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    entry = fake_entry(data)
    hub.add(entry.repo_id, entry.filename, data[:-10])
    folder = tmp_path / "models"
    with pytest.raises(ChecksumMismatchError, match="99990 bytes"):
        fetch(hub, entry, folder, tmp_path)
    assert leftovers(folder) == []


def test_offline_mode_names_file_repository_and_folder(hub: FakeHub, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = known_file("mmaudio_large_44k_v2.pth")
    folder = tmp_path / "models" / "mmaudio"
    with pytest.raises(MissingWeightsError) as info:
        fetch(hub, entry, folder, tmp_path)
    message = str(info.value)
    assert "mmaudio_large_44k_v2.pth" in message and "hkchengrex/MMAudio" in message
    assert str(folder) in message and "HF_HUB_OFFLINE" in message
    assert isinstance(info.value, FileNotFoundError)
    assert hub.requests == [] and leftovers(folder) == []


def test_missing_remote_file_names_file_repository_and_folder(hub: FakeHub, tmp_path: Path) -> None:
    entry = fake_entry(b"never served")
    folder = tmp_path / "models"
    with pytest.raises(MissingWeightsError) as info:
        fetch(hub, entry, folder, tmp_path)
    message = str(info.value)
    assert "model.safetensors" in message and "someone/weights" in message and str(folder) in message
    assert "downloading it failed" in message
    assert leftovers(folder) == []


def test_unreachable_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # huggingface_hub retries a refused connection with exponential back-off (about 25 s); skip the waiting.
    run_worker_after("import time\ntime.sleep = lambda _s: None", tmp_path, monkeypatch)
    closed = FakeHub()
    endpoint = closed.endpoint
    closed.close()
    entry = fake_entry(b"x")
    folder = tmp_path / "models"
    with pytest.raises(MissingWeightsError) as info:
        download_known_file(entry, folder, endpoint=endpoint, token=False, cache_dir=tmp_path / "c")
    message = str(info.value)
    assert "model.safetensors" in message and "someone/weights" in message and str(folder) in message
    assert "downloading it failed: " in message and "Error: " in message  # "<exception type>: <its message>"
    assert leftovers(folder) == []


def test_a_download_process_that_ends_without_a_result(hub: FakeHub, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed, crashed or unable to start: the error still names the file, and the process's last words."""
    run_worker_after("import os, sys\nprint('disk on fire', file=sys.stderr, flush=True)\nos._exit(7)", tmp_path,
                     monkeypatch)
    entry = fake_entry(b"never fetched")
    hub.add(entry.repo_id, entry.filename, b"never fetched")
    folder = tmp_path / "models"
    with pytest.raises(MissingWeightsError) as info:
        fetch(hub, entry, folder, tmp_path)
    message = str(info.value)
    assert "someone/weights" in message and str(folder) in message and "exit code 7" in message
    assert "disk on fire" in message and hub.requests == [] and leftovers(folder) == []


def test_the_token_reaches_the_hub_but_not_the_command_line(hub: FakeHub, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(5_000)
    entry = fake_entry(data)
    hub.add(entry.repo_id, entry.filename, data)
    started: list[tuple[list[str], dict[str, str] | None]] = []
    real_popen = subprocess.Popen

    def spy(args: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        started.append(([str(a) for a in args], kwargs.get("env")))  # type: ignore[arg-type]
        return real_popen(args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(subprocess, "Popen", spy)
    token = "hf_not_a_real_token_0123456789"
    path = download_known_file(entry, tmp_path / "models", endpoint=hub.endpoint, token=token,
                               cache_dir=tmp_path / "hf-cache")
    assert path.read_bytes() == data
    assert f"Bearer {token}" in hub.authorizations
    [(args, child_env)] = started
    assert not any(token in arg for arg in args)  # a command line is visible to every user (ps)
    assert child_env is None or token not in child_env.values()
    assert child_env is None or child_env.get("NO_PROXY") == "127.0.0.1,localhost"  # proxies etc. are inherited


def test_interrupting_from_the_progress_callback(hub: FakeHub, tmp_path: Path) -> None:
    """An exception from the callback (ComfyUI's interrupt) propagates as is; partial data is removed."""

    class StopRequestedError(Exception):
        pass

    data = os.urandom(400_000)
    entry = fake_entry(data)
    hub.add(entry.repo_id, entry.filename, data)
    hub.delay_s = 0.15
    seen: list[int] = []

    def progress(stage: str, done: int, total: int | None) -> None:
        seen.append(done)
        if stage == "download" and len(seen) > 2:
            raise StopRequestedError

    folder = tmp_path / "models"
    with pytest.raises(StopRequestedError):
        fetch(hub, entry, folder, tmp_path, progress=progress)
    deadline = time.monotonic() + 10
    while leftovers(folder) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(folder) == []


class CancelledError(Exception):
    """Stands for ComfyUI's InterruptProcessingException."""


@pytest.mark.parametrize("cancel", [CancelledError, KeyboardInterrupt])
def test_cancel_stops_the_transfer_at_once(hub: FakeHub, tmp_path: Path, cancel: type[BaseException]) -> None:
    """The transfer itself stops (the Hub sees the connection closed), not only the caller's wait."""
    data = os.urandom(16 * 2**20)
    entry = fake_entry(data)
    hub.add(entry.repo_id, entry.filename, data)
    hub.chunk_size, hub.delay_s = 16 * 1024, 0.025  # the whole body would take 26 s or more
    raised: list[tuple[BaseException, float]] = []

    def progress(stage: str, done: int, total: int | None) -> None:
        # Cancel mid-transfer, by the Hub's count: huggingface_hub writes to disk in 10 MiB pieces only.
        if stage == "download" and hub.transfers and hub.transfers[0].sent >= 256 * 1024:
            raised.append((cancel("stop"), time.monotonic()))
            raise raised[-1][0]

    folder = tmp_path / "models"
    with pytest.raises(cancel) as info:
        fetch(hub, entry, folder, tmp_path, progress=progress)
    assert info.value is raised[0][0]  # the callback's own exception, unchanged
    assert time.monotonic() - raised[0][1] < 5
    assert leftovers(folder) == []  # removed before the exception reached us
    [transfer] = hub.transfers
    assert transfer.ended.wait(5), "the Hub is still sending: the transfer goes on after the cancel"
    assert transfer.broken and transfer.sent < len(data) // 4
    assert time.monotonic() - raised[0][1] < 10


def test_the_download_process_stops_when_its_caller_is_gone(hub: FakeHub, tmp_path: Path) -> None:
    """The end of the worker's stdin (its caller killed, or restarted in place) stops it and removes its data."""
    data = os.urandom(8 * 2**20)
    entry = fake_entry(data)
    hub.add(entry.repo_id, entry.filename, data)
    hub.chunk_size, hub.delay_s = 16 * 1024, 0.025
    staging = tmp_path / "staging"
    staging.mkdir()
    request = {"repo_id": entry.repo_id, "filename": entry.filename, "revision": entry.revision,
               "local_dir": str(staging), "endpoint": hub.endpoint, "token": False, "cache_dir": str(tmp_path / "c")}
    worker = subprocess.Popen([sys.executable, str(WORKER_SCRIPT)], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert worker.stdin is not None
        worker.stdin.write(json.dumps(request).encode() + b"\n")
        worker.stdin.flush()
        deadline = time.monotonic() + 30
        while not (hub.transfers and hub.transfers[0].sent >= 128 * 1024) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hub.transfers and worker.poll() is None
        worker.stdin.close()
        assert worker.wait(timeout=10) != 0
        assert hub.transfers[0].ended.wait(5) and hub.transfers[0].sent < len(data) // 2
        assert not staging.exists()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


# ---- the catalogue ---------------------------------------------------------------------------------------------

def test_catalogue_is_consistent() -> None:
    ids = [f.id for f in KNOWN_FILES]
    assert len(ids) == len(set(ids))
    assert len({f.local_path for f in KNOWN_FILES}) == len(KNOWN_FILES)
    for entry in KNOWN_FILES:
        assert entry.kind in (*KINDS, "config")
        assert entry.sha256 is None or (len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0)
        assert entry.md5 is None or (len(entry.md5) == 32 and int(entry.md5, 16) >= 0)
        assert entry.size is None or entry.approx_size is None
        assert all(known_file(c).id == c for c in entry.companions)
        assert entry.url.startswith(f"https://huggingface.co/{entry.repo_id}/resolve/")
    # Only Kijai's fp32 CLIP has no published checksum (it gets a sidecar); config.json is checked by content.
    assert [f.id for f in KNOWN_FILES if f.sha256 is None] == [
        "apple_DFN5B-CLIP-ViT-H-14-384_fp32.safetensors", "bigvgan_v2_config.json"
    ]


@pytest.mark.parametrize("variant", sorted({f.variant for f in known_files("network")}))
@pytest.mark.parametrize("prefer", ["fp16", "fp32", "original"])
def test_every_variant_has_a_complete_set(variant: str, prefer: str) -> None:
    chosen = files_for_variant(variant, prefer=prefer)
    assert set(chosen) == set(KINDS)
    mode = chosen["network"].mode
    assert chosen["vae"].mode == mode and chosen["vocoder"].mode == mode
    if prefer == "original":
        assert all(f.source != "kijai" for f in chosen.values())


def test_catalogue_lookups() -> None:
    assert known_file("v1-44.pth").filename == "ext_weights/v1-44.pth"
    assert known_file("nvidia/bigvgan_v2_44khz_128band_512x/bigvgan_generator.pt").id == "bigvgan_generator.pt"
    with pytest.raises(ValueError, match="No published file"):
        known_file("mmaudio_huge.pth")
    with pytest.raises(ValueError, match="Unknown network variant"):
        files_for_variant("huge_44k")
    assert {f.variant for f in known_files("vocoder")} == {"bigvgan_v1_16k", "bigvgan_v2_44k"}


def test_size_tolerance() -> None:
    entry = dataclasses.replace(known_file("mmaudio_vae_44k_fp16.safetensors"))
    assert entry.size_matches(entry.approx_size) and not entry.size_matches(entry.approx_size // 2)


def test_importing_the_library_neither_downloads_nor_imports_the_hub_client() -> None:
    code = ("import sys, mmaudio.weights; "
            "print('huggingface_hub' in sys.modules, 'httpx' in sys.modules or 'httpx2' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.split() == ["False", "False"]
