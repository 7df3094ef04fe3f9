"""ComfyUI entry point of MMAudio Sync.

ComfyUI imports this folder as a package and calls ``comfy_entrypoint`` (the V3 node API). The nodes live in
``nodes/``; the model library in ``mmaudio/`` never imports ComfyUI. On a ComfyUI without ``comfy_api.latest``
(older than ``MINIMUM_COMFYUI``) the pack logs one clear line and exports nothing, instead of being skipped
silently. ``NODE_CLASS_MAPPINGS`` is deliberately never exported: ComfyUI would then ignore the V3 entry point.
"""

from __future__ import annotations

import importlib.util
import logging

# Keep in step with [tool.comfy] requires-comfyui in pyproject.toml.
MINIMUM_COMFYUI = "0.3.48"
WEB_DIRECTORY = "./js"

_log = logging.getLogger(__name__)

try:
    from comfy_api.latest import ComfyExtension as _ComfyExtension  # noqa: F401  (probe: the V3 node API)
except ImportError as exc:
    __all__: list[str] = []
    if importlib.util.find_spec("comfy") is None:
        # Not inside ComfyUI at all (a test runner or a script importing the repository): nothing to report.
        _log.debug("MMAudio Sync: ComfyUI not found, node entry point not defined")
    elif isinstance(exc, ModuleNotFoundError) and (exc.name or "").startswith("comfy_api"):
        _log.error(
            "MMAudio Sync needs ComfyUI >= %s with the V3 node API; this ComfyUI lacks comfy_api.latest",
            MINIMUM_COMFYUI,
        )
    else:
        _log.error("MMAudio Sync could not import ComfyUI's V3 node API (comfy_api.latest): %s", exc)
else:
    from .nodes.extension import comfy_entrypoint

    __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
