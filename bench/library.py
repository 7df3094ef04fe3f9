"""Import this pack's ``mmaudio`` library and the reference implementation side by side in one process.

Both are called ``mmaudio``. Our library only uses relative imports, so it is loaded from its folder under a
private name (:data:`LIBRARY_NAME`). The reference uses absolute ``mmaudio.*`` imports, so it must be imported
as ``mmaudio``; that happens with its checkout first on ``sys.path`` (only during the import) and with any
``mmaudio`` modules that were already loaded (e.g. ours, in a test session) set aside, then put back. The
reference keeps the name ``mmaudio`` in ``sys.modules`` when nothing else had it (the benchmark script's case),
which ``torch.compile`` needs to trace it; otherwise its modules stay usable through their direct references.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parent.parent
LIBRARY_NAME = "mmaudio_sync_lib"


def load_library(root: Path = REPO_ROOT) -> ModuleType:
    """This pack's library as the package :data:`LIBRARY_NAME` (loaded once, then reused)."""
    loaded = sys.modules.get(LIBRARY_NAME)
    if loaded is not None:
        return loaded
    package_dir = root / "mmaudio"
    spec = importlib.util.spec_from_file_location(
        LIBRARY_NAME, package_dir / "__init__.py", submodule_search_locations=[str(package_dir)])
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the library from {package_dir}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[LIBRARY_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[LIBRARY_NAME]
        raise
    return module


def library_module(name: str) -> ModuleType:
    """A submodule of the library, e.g. ``library_module("model")`` for ``mmaudio.model``."""
    load_library()
    return importlib.import_module(f"{LIBRARY_NAME}.{name}")


@dataclass(frozen=True)
class ReferenceModules:
    """The two reference modules the benchmark drives: the network and the flow-matching sampler."""

    root: Path
    networks: ModuleType  # mmaudio.model.networks: MMAudio, get_my_mmaudio
    flow_matching: ModuleType  # mmaudio.model.flow_matching: FlowMatching
    stubbed: tuple[str, ...]  # modules replaced by stand-ins because they are not installed here


def _stub_torchdiffeq() -> ModuleType:
    """Stand-in for ``torchdiffeq`` (not installed here, and not a dependency of the pack).

    The reference's flow_matching.py imports ``odeint`` at module level but only calls it for
    ``inference_mode='adaptive'``; the benchmark uses 'euler', as the reference demo does.
    """
    module = types.ModuleType("torchdiffeq")

    def odeint(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("torchdiffeq is stubbed in the benchmark: only inference_mode='euler' is available")

    module.odeint = odeint  # type: ignore[attr-defined]
    return module


def load_reference(root: Path | str) -> ReferenceModules:
    """Import the reference network and sampler from a checkout of hkchengrex/MMAudio at ``root``.

    Raises ImportError with a clear message when ``root`` is not such a checkout or an import fails.
    """
    root = Path(root).resolve()
    if not (root / "mmaudio" / "model" / "networks.py").is_file():
        raise ImportError(f"{root} is not a checkout of hkchengrex/MMAudio (mmaudio/model/networks.py is missing)")

    def is_mmaudio(name: str) -> bool:
        return name == "mmaudio" or name.startswith("mmaudio.")

    set_aside = {name: mod for name, mod in sys.modules.items() if is_mmaudio(name)}
    for name in set_aside:
        del sys.modules[name]
    stubbed: list[str] = []
    added_stubs: list[str] = []
    if importlib.util.find_spec("torchdiffeq") is None and "torchdiffeq" not in sys.modules:
        sys.modules["torchdiffeq"] = _stub_torchdiffeq()
        stubbed.append("torchdiffeq")
        added_stubs.append("torchdiffeq")
    sys.path.insert(0, str(root))
    try:
        networks = importlib.import_module("mmaudio.model.networks")
        flow_matching = importlib.import_module("mmaudio.model.flow_matching")
    except ImportError as exc:
        raise ImportError(f"cannot import the reference network from {root}: {exc}") from exc
    finally:
        sys.path.remove(str(root))
        if set_aside:  # another ``mmaudio`` was loaded first: it gets its name back
            for name in [n for n in sys.modules if is_mmaudio(n)]:
                del sys.modules[name]
            sys.modules.update(set_aside)
        for name in added_stubs:
            sys.modules.pop(name, None)
    return ReferenceModules(root=root, networks=networks, flow_matching=flow_matching, stubbed=tuple(stubbed))
