"""Downloads one file from the Hugging Face Hub for the library's weight download, in a process of its own.

The library runs this file as a plain script (``python hub_download.py``) so that a cancelled download can be
stopped by ending the process: a thread cannot be stopped, and a cancelled multi-GB transfer would go on to its end.
It is never imported as part of the package (inside ComfyUI the pack's package name is not ``mmaudio``), so it uses
only the standard library and huggingface_hub. It lies alone in its folder because Python puts the script's folder
first on the module path: no sibling module can shadow one that huggingface_hub imports.

Protocol. stdin: one JSON line, the request (``repo_id``, ``filename``, ``revision``, ``local_dir``, ``endpoint``;
``token`` and ``cache_dir`` when given). The token travels there, never on the command line, which every user of
the machine can read. stdin then stays open: its end means the caller is gone (killed, or restarted in place), and
this process removes its partial download and exits. stdout: one JSON line, the result, ``{"ok": true, "path": ...}``
or ``{"ok": false, "type": <exception type name>, "message": ...}``; the exit code is 0 or 1 accordingly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
from typing import Any

CALLER_GONE_EXIT = 3
_MESSAGE_LIMIT = 4000


def _read_request() -> dict[str, Any]:
    line = sys.stdin.buffer.readline()
    request = json.loads(line.decode("utf-8"))
    if not isinstance(request, dict):
        raise ValueError(f"expected a JSON object as the request, got {line[:200]!r}")
    return request


def _exit_when_caller_goes(local_dir: str) -> None:
    """Watch stdin on a daemon thread: at its end remove the partial download and exit at once.

    Raw ``os.read`` and not ``sys.stdin``: a daemon thread blocked inside a buffered reader can abort the
    interpreter's shutdown after a successful download.
    """

    def watch() -> None:
        fd = sys.stdin.fileno()
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass
        shutil.rmtree(local_dir, ignore_errors=True)
        os._exit(CALLER_GONE_EXIT)

    threading.Thread(target=watch, name="caller-watch", daemon=True).start()


def _download(request: dict[str, Any]) -> str:
    from huggingface_hub import hf_hub_download

    kwargs: dict[str, Any] = {key: request[key] for key in ("revision", "local_dir", "endpoint")}
    kwargs.update({key: request[key] for key in ("token", "cache_dir") if key in request})
    return str(hf_hub_download(request["repo_id"], request["filename"], **kwargs))


def _report(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def main() -> int:
    """Serve one request; the result goes to stdout whatever happens short of being killed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the caller too, which decides and ends us
    try:
        request = _read_request()
        _exit_when_caller_goes(str(request["local_dir"]))
        path = _download(request)
    except Exception as error:
        _report({"ok": False, "type": type(error).__name__, "message": str(error)[:_MESSAGE_LIMIT]})
        return 1
    _report({"ok": True, "path": path})
    return 0


if __name__ == "__main__":
    sys.exit(main())
