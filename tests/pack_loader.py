"""Import the repository as a ComfyUI pack would be imported: a package with its own name, not top-level modules.

ComfyUI loads a custom-node folder through importlib under a name derived from its path, so the pack's code
reaches the library as ``<pack>.mmaudio`` (relative imports), never as a top-level ``mmaudio``. Node tests do
the same here, under :data:`PACK_NAME`, with the ComfyUI stand-in of ``tests/comfy_stub`` in ``sys.modules``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from . import comfy_stub

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "mmaudio_sync_pack"


def load_pack(name: str = PACK_NAME, root: Path = REPO_ROOT) -> ModuleType:
    """Execute ``root/__init__.py`` as package ``name`` (its subpackages resolve under that name)."""
    spec = importlib.util.spec_from_file_location(name, root / "__init__.py", submodule_search_locations=[str(root)])
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the pack from {root}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        unload_pack(name)
        raise
    return module


def unload_pack(name: str = PACK_NAME) -> None:
    for module_name in list(sys.modules):
        if module_name == name or module_name.startswith(name + "."):
            del sys.modules[module_name]


@contextlib.contextmanager
def stubbed_pack(models_dir: Path) -> Iterator[ModuleType]:
    """The pack imported against fresh ComfyUI stubs whose models directory is ``models_dir``."""
    uninstall = comfy_stub.install()
    try:
        sys.modules["folder_paths"].reset(str(models_dir))
        pack = load_pack()
        try:
            yield pack
        finally:
            unload_pack()
    finally:
        uninstall()


def tiny_models_dir(base: Path) -> Path:
    """The small random-weight models (written once per test session under ``base``)."""
    from .comfy_stub import tiny_weights

    folder = base / "mmaudio_tiny_models"
    done = folder / ".complete"
    if not done.exists():
        tiny_weights.write_models(folder)
        done.write_text("ok")
    return folder


def models_root_with(base: Path, models: Path, name: str = "comfy_models") -> Path:
    """A ComfyUI models directory whose ``mmaudio`` folder is ``models`` (a symlink, nothing copied)."""
    root = base / name
    root.mkdir(parents=True, exist_ok=True)
    link = root / "mmaudio"
    if not link.exists():
        link.symlink_to(models, target_is_directory=True)
    return root
