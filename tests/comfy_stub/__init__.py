"""A small stand-in for the few ComfyUI modules the node layer touches.

Only what ``nodes/`` uses is here: the ``comfy_api.latest`` io/ui subset (enough to build schemas and run
``execute``), ``comfy.model_management``, ``comfy.model_patcher``, ``comfy.utils``, ``comfy.ops`` and
``folder_paths``. Signatures follow ComfyUI's (keyword names included) so a call the real module would reject
fails here too; behaviour is reduced to what tests observe (recorded loads, progress updates, interrupts).

:func:`install` puts the stubs into ``sys.modules`` under their real names and returns a function that removes
them again, so nothing leaks into tests that must not see ComfyUI.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

MODULES_DIR = Path(__file__).resolve().parent / "modules"

# Real module name -> stub source (relative to MODULES_DIR). Packages come before their submodules.
STUB_MODULES: dict[str, str] = {
    "folder_paths": "folder_paths.py",
    "comfy": "comfy/__init__.py",
    "comfy.model_management": "comfy/model_management.py",
    "comfy.model_patcher": "comfy/model_patcher.py",
    "comfy.utils": "comfy/utils.py",
    "comfy.ops": "comfy/ops.py",
    "comfy_api": "comfy_api/__init__.py",
    "comfy_api.latest": "comfy_api/latest/__init__.py",
}


def _load(name: str, path: Path) -> ModuleType:
    is_package = path.name == "__init__.py"
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(path.parent)] if is_package else None
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def install() -> Callable[[], None]:
    """Load fresh stub modules into ``sys.modules``; the returned function restores the previous state."""
    clash = [name for name in STUB_MODULES if name in sys.modules]
    if clash:
        raise RuntimeError(f"real or stale ComfyUI modules already imported: {clash}")
    for name, relative in STUB_MODULES.items():
        _load(name, MODULES_DIR / relative)

    def uninstall() -> None:
        for name in list(sys.modules):
            if name in STUB_MODULES or name.split(".")[0] in {"comfy", "comfy_api"}:
                del sys.modules[name]

    return uninstall
