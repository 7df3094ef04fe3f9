"""The pack's entry point on a ComfyUI that predates the V3 node API (no ``comfy_api.latest``)."""

from __future__ import annotations

import logging
import sys

from . import comfy_stub
from .pack_loader import load_pack, unload_pack


def test_old_comfyui_gets_one_clear_log_line(monkeypatch, caplog):
    """A ComfyUI with ``comfy`` but without ``comfy_api.latest`` (older than the V3 API): nothing exported."""
    uninstall = comfy_stub.install()
    try:
        for name in [n for n in sys.modules if n.startswith("comfy_api")]:
            del sys.modules[name]
        sys.modules["comfy_api"] = None  # import comfy_api -> ModuleNotFoundError, as on ComfyUI < 0.3.48
        monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object() if name == "comfy" else None)
        with caplog.at_level(logging.ERROR):
            pack = load_pack()
        try:
            assert not hasattr(pack, "comfy_entrypoint")
            assert not hasattr(pack, "NODE_CLASS_MAPPINGS")
            lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(lines) == 1
            assert "needs ComfyUI >= 0.3.48" in lines[0] and "comfy_api.latest" in lines[0]
        finally:
            unload_pack()
    finally:
        sys.modules.pop("comfy_api", None)
        uninstall()


