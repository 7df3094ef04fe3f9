"""The pack can sit in custom_nodes beside kijai's pack (which puts a top-level ``mmaudio`` on sys.path) and beside
a pip-installed reference ``mmaudio``: it reaches its own library through relative imports only."""

from __future__ import annotations

import ast
import asyncio
import sys
import types
from pathlib import Path
from typing import ClassVar

import pytest

from .pack_loader import REPO_ROOT, stubbed_pack

PACK_CODE = [*sorted((REPO_ROOT / "mmaudio").rglob("*.py")), *sorted((REPO_ROOT / "nodes").rglob("*.py")),
             REPO_ROOT / "__init__.py"]


@pytest.mark.parametrize("path", PACK_CODE, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_pack_code_uses_relative_imports_and_leaves_sys_path_alone(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            assert node.module.split(".")[0] not in {"mmaudio", "nodes"}, f"{path}:{node.lineno} absolute import"
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name.split(".")[0] not in {"mmaudio", "nodes"}, f"{path}:{node.lineno} absolute import"
        if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
            pytest.fail(f"{path}:{node.lineno} touches sys.path")


class _ForeignMMAudio(types.ModuleType):
    """Stands for another pack's or the reference's top-level ``mmaudio``: any use of it is a failure."""

    __path__: ClassVar[list[str]] = []

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):  # module introspection by other libraries (torchvision scans sys.modules)
            raise AttributeError(name)
        raise AssertionError(f"the pack used the foreign top-level mmaudio (attribute {name!r})")


def test_pack_loads_and_registers_its_nodes_beside_a_foreign_mmaudio(tmp_path, monkeypatch) -> None:
    saved = {name: module for name, module in sys.modules.items() if name == "mmaudio" or name.startswith("mmaudio.")}
    for name in saved:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mmaudio", _ForeignMMAudio("mmaudio"))
    with stubbed_pack(tmp_path / "models") as pack:
        extension = asyncio.run(pack.comfy_entrypoint())
        nodes = asyncio.run(extension.get_node_list())
        ids = {node.define_schema().node_id for node in nodes}
        assert {"MMAudioSyncNetworkLoader", "MMAudioSyncSampler", "MMAudioSyncDecode"} <= ids
        library = [m for n, m in sys.modules.items() if n.startswith(pack.__name__ + ".mmaudio")]
        assert library, "the pack's own library was not imported"
        assert all(m.__name__.startswith(pack.__name__ + ".") for m in library)
        assert not any(n.startswith("mmaudio.") for n in sys.modules)
