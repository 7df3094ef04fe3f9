"""Weights files on disk: what each one is, loading the component a loader asks for, listing a folder by kind.

This is the layer the node pack's loaders use: a dropdown lists only the files of its kind
(:func:`list_files_of_kind`), and a loader gets its component's state dict with the module-side key names
whatever the file's nesting or prefix (:func:`load_component`), or a message that says what the chosen file is
instead (:func:`require_kind`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import WrongCheckpointError
from .identify import KIND_NAMES, KINDS, CheckpointIdentity, identify_checkpoint, identify_components
from .reading import WEIGHT_SUFFIXES, FileHeader, load_tensors, read_header

log = logging.getLogger(__name__)

_DTYPE_WORDS = {"F32": "fp32", "F16": "fp16", "BF16": "bf16", "F8_E4M3": "fp8_e4m3fn", "F8_E5M2": "fp8_e5m2"}
# Wrapper keys some trainers save around a state dict; stripped when a file holds no component we know.
_WRAPPERS = ("state_dict.", "model.", "module.", "generator.", "ema.", "net.")


_COMPONENT_CACHE_LIMIT = 256
_component_cache: dict[int, tuple[FileHeader, list[CheckpointIdentity]]] = {}


def _components(header: FileHeader) -> list[CheckpointIdentity]:
    """identify_components of a header, remembered while read_header keeps returning the same header object."""
    cached = _component_cache.get(id(header))
    if cached is not None and cached[0] is header:
        return cached[1]
    components = identify_components(header.shapes())
    if len(_component_cache) >= _COMPONENT_CACHE_LIMIT:
        _component_cache.clear()
    _component_cache[id(header)] = (header, components)
    return components


def _main_identity(header: FileHeader) -> CheckpointIdentity:
    components = _components(header)
    if len(components) == 1:
        return components[0]
    return identify_checkpoint(header.shapes())


@dataclass(frozen=True)
class FoundFile:
    """A weights file found in a model folder: ``name`` is its path relative to that folder, '/'-separated."""

    name: str
    path: Path
    identity: CheckpointIdentity
    storage: str  # "fp32", "fp16", "mixed (fp16, fp32)", ...


def _storage_words(header: FileHeader, identity: CheckpointIdentity | None = None) -> str:
    codes = {info.dtype for key, info in header.tensors.items() if identity is None or identity.owns(key)}
    floats = sorted({_DTYPE_WORDS.get(c, c.lower()) for c in codes if c.startswith(("F", "BF"))})
    if not floats:
        return "no floating-point tensors"
    return floats[0] if len(floats) == 1 else f"mixed ({', '.join(floats)})"


def _container_words(header: FileHeader) -> str:
    return {"safetensors": "safetensors", "torch-zip": "PyTorch file", "torch-legacy": "legacy PyTorch file"}[
        header.container
    ]


def identify_file(path: str | os.PathLike[str]) -> CheckpointIdentity:
    """:func:`identify_checkpoint` of a file, with its container and storage dtype added to the description.

    Raises :class:`~mmaudio.errors.WrongCheckpointError` if the file is truncated, corrupt or unsafe.
    """
    header = read_header(path)
    identity = _main_identity(header)
    if not identity.is_known:
        return identity
    extra = f"{_container_words(header)}, {_storage_words(header, identity)}"
    return dataclasses.replace(identity, description=f"{identity.description} [{extra}]")


def require_kind(path: str | os.PathLike[str], kind: str) -> CheckpointIdentity:
    """The component of ``kind`` in ``path``; a :class:`WrongCheckpointError` saying what the file is otherwise.

    Also raised when the component is recognised but cannot be loaded (its ``problems``).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    path = Path(path)
    header = read_header(path)
    found = next((c for c in _components(header) if c.kind == kind), None)
    if found is None:
        what = _main_identity(header).description
        raise WrongCheckpointError(
            f"'{path.name}' is not {KIND_NAMES[kind]}. It is: {what}. Choose it in the loader for its kind, and "
            f"pick {KIND_NAMES[kind]} here. Full path: {path}"
        )
    if found.problems:
        raise WrongCheckpointError(
            f"'{path.name}' is {found.description}, but it cannot be loaded: {'; '.join(found.problems)}. "
            f"Full path: {path}"
        )
    return found


def load_component(
    path: str | os.PathLike[str], kind: str, *, dtype: torch.dtype | None = None
) -> tuple[dict[str, torch.Tensor], CheckpointIdentity]:
    """The state dict of the ``kind`` component in ``path`` under the module's own key names, and its identity.

    Prefixes and nestings (``generator.``, ``vae.``, ...) are removed; Synchformer keys are returned under
    ``vfeat_extractor.`` whether the file has that prefix or not, and its unused audio branch is not loaded.
    ``dtype`` casts floating tensors on the way (``None`` keeps the file's dtypes).
    """
    identity = require_kind(path, kind)
    tensors = load_tensors(path, select=identity.owns)
    state_dict = {identity.canonical_name(k): v for k, v in tensors.items()}
    integers = sorted(k for k, v in state_dict.items() if not (v.is_floating_point() or v.dtype == torch.bool))
    if integers:  # every MMAudio weight is a float; integers mean a quantized or foreign file
        raise WrongCheckpointError(
            f"'{Path(path).name}' holds {len(integers)} integer tensor(s) (e.g. {integers[0]}: "
            f"{state_dict[integers[0]].dtype}) where {KIND_NAMES[kind]} has float weights; a quantized or converted "
            "file this pack cannot load. Full path: " + str(path))
    if dtype is not None:
        state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    return state_dict, identity


def load_state_dict_file(path: str | os.PathLike[str], kind: str | None = None) -> dict[str, torch.Tensor]:
    """A file's state dict, safely loaded, with known nestings unwrapped.

    With ``kind`` it is :func:`load_component`'s state dict; without, the main component's if the file holds
    one we know, else every tensor with a common wrapper prefix (``state_dict.``, ``model.``, ...) removed.
    """
    if kind is not None:
        return load_component(path, kind)[0]
    identity = _main_identity(read_header(path))
    if identity.is_known:
        return load_component(path, identity.kind)[0]
    tensors = load_tensors(path)
    for wrapper in _WRAPPERS:
        if tensors and all(k.startswith(wrapper) for k in tensors):
            return {k[len(wrapper):]: v for k, v in tensors.items()}
    return tensors


def _walk_weights(folder: Path) -> list[Path]:
    found = []
    visited: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        stat = os.stat(root)
        if (stat.st_dev, stat.st_ino) in visited:  # a symlink loop
            dirs[:] = []
            continue
        visited.add((stat.st_dev, stat.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # staging and cache folders are hidden
        for name in sorted(files):
            if name.lower().endswith(WEIGHT_SUFFIXES) and not name.startswith("."):
                found.append(Path(root) / name)
    return found


def _scan(folder_paths: list[str | os.PathLike[str]]) -> Iterator[tuple[str, Path, FileHeader | str]]:
    """(relative name, path, header or the error text) of every weights file, first folder winning a name."""
    seen: set[str] = set()
    for folder in folder_paths:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in _walk_weights(folder):
            name = path.relative_to(folder).as_posix()
            if name in seen:
                continue
            seen.add(name)
            try:
                yield name, path, read_header(path)
            except (WrongCheckpointError, OSError) as error:
                yield name, path, str(error)


def scan_folders(folder_paths: list[str | os.PathLike[str]]) -> list[tuple[str, Path, CheckpointIdentity | str]]:
    """Every weights file under ``folder_paths``: (relative name, path, identity or the error text).

    A name found in several folders is reported once, from the first folder (ComfyUI's rule).
    """
    return [
        (name, path, header if isinstance(header, str) else _main_identity(header))
        for name, path, header in _scan(folder_paths)
    ]


def list_files_of_kind(
    folder_paths: list[str | os.PathLike[str]], kind: str, *, mode: str | None = None
) -> list[FoundFile]:
    """The weights files under ``folder_paths`` that hold a component of ``kind`` (and ``mode``, if given).

    Files are recognised by their tensors, so a renamed file still shows up in the right list and a file of
    another kind never does. Unreadable files are left out (and logged).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    result: list[FoundFile] = []
    for name, path, header in _scan(folder_paths):
        if isinstance(header, str):
            log.info("Skipping unreadable weights file %s: %s", path, header)
            continue
        component = next((c for c in _components(header) if c.kind == kind), None)
        if component is None or (mode is not None and component.mode != mode):
            continue
        result.append(FoundFile(name=name, path=path, identity=component, storage=_storage_words(header, component)))
    return result
