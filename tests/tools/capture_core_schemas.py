"""Refresh ``tests/core_node_schemas.json``: the ``/object_info`` entries of the core nodes our workflows use.

Starts a real ComfyUI on the CPU (no custom nodes, everything it writes in a temporary folder), reads
``/object_info`` and ``/system_stats``, keeps exactly the core node types that ``workflows/*.json`` use, and stops
it again. It also records, for each of those types, the ``widgets_values`` of one node saved by the real frontend
in ComfyUI's own template workflows (package ``comfyui_workflow_templates``, when installed), so the tests can
check our reading of the positional widget layout against the frontend's.

Usage (stdlib only; any Python can run it)::

    python tests/tools/capture_core_schemas.py --comfyui /work/comfy/ComfyUI --python /work/comfy/venv/bin/python

``--comfyui`` defaults to ``$COMFYUI_PATH``, ``--python`` to ``$COMFYUI_PYTHON`` or this interpreter.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS_DIR = REPO_ROOT / "workflows"
OUTPUT = REPO_ROOT / "tests" / "core_node_schemas.json"
OUR_PREFIX = "MMAudioSync"
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def core_types_used(workflows_dir: Path = WORKFLOWS_DIR) -> list[str]:
    """Core node types of every workflow file (not ours, not frontend-only), sorted."""
    used = set()
    for path in sorted(workflows_dir.glob("*.json")):
        for node in json.loads(path.read_text(encoding="utf-8")).get("nodes", []):
            kind = node.get("type", "")
            if kind and not kind.startswith(OUR_PREFIX) and kind not in FRONTEND_ONLY:
                used.add(kind)
    return sorted(used)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def fetch_from_comfyui(comfyui: Path, python: str, port: int, timeout: float = 300) -> tuple[dict, dict]:
    """(object_info, system_stats) of a ComfyUI started for the purpose and stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="capture_core_schemas_") as scratch:
        base = Path(scratch)
        dirs = {name: base / name for name in ("output", "input", "temp", "user")}
        for folder in dirs.values():
            folder.mkdir()
        command = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                   "--disable-auto-launch", "--disable-all-custom-nodes",
                   "--output-directory", str(dirs["output"]), "--input-directory", str(dirs["input"]),
                   "--temp-directory", str(dirs["temp"]), "--user-directory", str(dirs["user"]),
                   "--database-url", f"sqlite:///{base / 'comfy.db'}"]
        log_path = base / "comfyui.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(command, cwd=comfyui, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"ComfyUI exited ({process.returncode}):\n{log_path.read_text()[-4000:]}")
                try:
                    object_info = _get(url + "/object_info")
                    break
                except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"ComfyUI did not answer in {timeout} s") from None
                    time.sleep(1)
            return object_info, _get(url + "/system_stats")
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _templates_dir(python: str) -> Path | None:
    probe = "import os, comfyui_workflow_templates as t; print(os.path.dirname(t.__file__))"
    result = subprocess.run([python, "-c", probe], capture_output=True, text=True)
    return Path(result.stdout.strip()) if result.returncode == 0 and result.stdout.strip() else None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))


def saved_widget_examples(templates: Path | None, types: list[str]) -> dict[str, dict[str, Any]]:
    """For each type: the widgets_values of one active node in the newest-saved official template using it.

    Templates that do not say which frontend saved them are skipped: older frontends saved a different layout
    (e.g. a value for the audio player of SaveAudio)."""
    best: dict[str, tuple[tuple, dict[str, Any]]] = {}
    if templates is None:
        return {}
    for file in sorted(glob.glob(str(templates / "**" / "*.json"), recursive=True)):
        try:
            workflow = json.loads(Path(file).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list):
            continue
        frontend = str((workflow.get("extra") or {}).get("frontendVersion") or "")
        if not frontend:
            continue
        for node in workflow["nodes"]:
            kind = node.get("type")
            values = node.get("widgets_values")
            if kind not in types or node.get("mode", 0) != 0 or not isinstance(values, list):
                continue
            key = (_version_key(frontend), Path(file).name)
            if kind not in best or key > best[kind][0]:
                best[kind] = (key, {"template": Path(file).name, "frontend_version": frontend,
                                    "widgets_values": values})
    return {kind: best[kind][1] for kind in sorted(best)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout")
    parser.add_argument("--python", default=os.environ.get("COMFYUI_PYTHON") or sys.executable)
    parser.add_argument("--port", type=int, default=8190)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    if not args.comfyui:
        parser.error("give --comfyui or set COMFYUI_PATH")
    comfyui = Path(args.comfyui).expanduser().resolve()
    types = core_types_used()
    if not types:
        parser.error(f"no core node types found in {WORKFLOWS_DIR}")
    object_info, stats = fetch_from_comfyui(comfyui, args.python, args.port)
    missing = [kind for kind in types if kind not in object_info]
    if missing:
        raise SystemExit(f"this ComfyUI has no {missing}")
    system = stats.get("system", {})
    snapshot = {
        "about": "GET /object_info entries of the core nodes used by workflows/*.json; refresh with "
                 "tests/tools/capture_core_schemas.py",
        "comfyui_version": system.get("comfyui_version"),
        "frontend_version": system.get("required_frontend_version"),
        "templates_version": system.get("installed_templates_version"),
        "nodes": {kind: object_info[kind] for kind in types},
        "saved_widget_values": saved_widget_examples(_templates_dir(args.python), types),
    }
    args.output.write_text(json.dumps(snapshot, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(types)} node schemas of ComfyUI {snapshot['comfyui_version']} to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
