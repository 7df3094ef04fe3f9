"""Reading weights files safely: tensor names and shapes from the header alone, tensors only on request.

Two containers occur in the wild: safetensors (Kijai's conversions) and PyTorch's ``torch.save`` files (the
original ``.pth``/``.pt``/``.bin`` releases, some of them nesting the state dict under a key such as
``'generator'``). Both are read without executing code: safetensors by design, PyTorch files only with
``torch.load(weights_only=True)``. A pickle that needs code to run is refused with a message that says so.

Nested dictionaries are flattened with ``.`` so that ``{'generator': {'conv_pre.weight_v': ...}}`` reads as
``generator.conv_pre.weight_v``; the identification layer finds the component under such a prefix.

Header reads are cached by (path, modification time, size), so ComfyUI listing the model folder on every UI
refresh costs one stat per file.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import WrongCheckpointError

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
WEIGHT_SUFFIXES = SAFETENSORS_SUFFIXES + TORCH_SUFFIXES

# Legacy (pre-zip) torch.save files are a sequence of pickles; every pickle starts with the PROTO opcode.
_PICKLE_PROTO = b"\x80"
_ZIP_MAGIC = b"PK\x03\x04"
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the format's own limit

# safetensors dtype code -> bytes per element (codes the format defines; unknown codes skip the size check)
_SAFETENSORS_ITEMSIZE: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
    "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1,
    "F8_E8M0": 1, "C64": 8,
}

_TORCH_TO_CODE: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2", torch.complex64: "C64",
}


@dataclass(frozen=True)
class TensorInfo:
    """Shape and storage dtype of one tensor, as its file declares them (dtype as a safetensors code)."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class FileHeader:
    """What a weights file holds, read without loading tensor data."""

    path: Path
    container: str  # "safetensors", "torch-zip" or "torch-legacy"
    tensors: Mapping[str, TensorInfo]
    metadata: Mapping[str, str]  # safetensors __metadata__; for torch files the top-level non-tensor entries

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: info.shape for name, info in self.tensors.items()}

    def dtypes(self) -> set[str]:
        return {info.dtype for info in self.tensors.values()}


# ---- errors --------------------------------------------------------------------------------------------------

def _corrupt(path: Path, detail: str) -> WrongCheckpointError:
    return WrongCheckpointError(
        f"'{path.name}' is truncated or corrupt ({detail}). Download it again; a partial download or a copy that "
        f"was interrupted looks like this. Full path: {path}"
    )


def _needs_code(path: Path, what: str) -> WrongCheckpointError:
    return WrongCheckpointError(
        f"'{path.name}' is refused: loading it would run Python code ({what}). Only plain tensors are read, "
        f"so a file from an unknown source cannot execute anything. If it is a training checkpoint, use the "
        f"released weights file instead; if you trust it, convert it to .safetensors. Full path: {path}"
    )


def _translate_torch_error(path: Path, error: BaseException) -> WrongCheckpointError:
    """Turn torch.load's messages (which advise weights_only=False) into ours."""
    text = str(error)
    code_markers = ("GLOBAL", "add_safe_globals", "reduce for", "allowlisted", "must be imported to load")
    if isinstance(error, pickle.UnpicklingError) and any(m in text for m in code_markers):
        match = re.search(r"GLOBAL ([\w.]+)", text)
        what = f"it contains a Python object of type {match.group(1)}" if match else "it contains Python objects"
        return _needs_code(path, what)
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    if "Weights only load failed" in first_line:  # a byte stream the safe unpickler cannot parse at all
        inner = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n|$)", text, flags=re.S)
        first_line = f"not a valid PyTorch pickle: {inner.group(1).strip() if inner else 'unreadable'}"
    return _corrupt(path, first_line[:300])


# ---- container detection ---------------------------------------------------------------------------------------

def _sniff(path: Path) -> str:
    """Container of ``path`` from its first bytes (the name is only a hint)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except FileNotFoundError:
        raise FileNotFoundError(f"Weights file not found: {path}") from None
    if len(head) < 8:
        raise _corrupt(path, f"only {len(head)} bytes long")
    if head.startswith(_ZIP_MAGIC):
        return "torch-zip"
    header_len = int.from_bytes(head[:8], "little")
    if len(head) > 8 and head[8:9] == b"{" and header_len < _MAX_SAFETENSORS_HEADER:
        return "safetensors"
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        return "safetensors"  # let the header parser say precisely what is wrong
    if head.startswith(_PICKLE_PROTO):
        return "torch-legacy"  # torch checks its magic number and says if this is something else
    raise _corrupt(path, "neither a safetensors file nor a PyTorch checkpoint")


# ---- safetensors -------------------------------------------------------------------------------------------------

def _read_safetensors_header(path: Path) -> FileHeader:
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise _corrupt(path, "shorter than the 8-byte safetensors prefix")
        header_len = int.from_bytes(prefix, "little")
        if header_len > _MAX_SAFETENSORS_HEADER:
            raise _corrupt(path, f"header length {header_len} is not plausible")
        if 8 + header_len > size:
            raise _corrupt(path, f"header needs {header_len} bytes but the file ends after {size - 8}")
        raw = handle.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _corrupt(path, f"the safetensors header is not valid JSON: {error}") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "the safetensors header is not a JSON object")

    metadata = header.pop("__metadata__", None) or {}
    data_len = size - 8 - header_len
    tensors: dict[str, TensorInfo] = {}
    needed = 0
    for name, entry in header.items():
        try:
            dtype = str(entry["dtype"])
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise _corrupt(path, f"malformed header entry for tensor '{name}'") from None
        if any(d < 0 for d in shape) or begin < 0 or end < begin:
            raise _corrupt(path, f"impossible shape or offsets for tensor '{name}'")
        itemsize = _SAFETENSORS_ITEMSIZE.get(dtype)
        if itemsize is not None and end - begin != math.prod(shape) * itemsize:
            raise _corrupt(path, f"tensor '{name}' declares {end - begin} bytes for shape {list(shape)} {dtype}")
        needed = max(needed, end)
        tensors[name] = TensorInfo(shape, dtype)
    if needed > data_len:
        raise _corrupt(path, f"the header promises {needed} bytes of tensor data but the file holds {data_len}")
    if needed < data_len:
        raise _corrupt(path, f"{data_len - needed} unexpected bytes after the last tensor")
    meta = {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}
    return FileHeader(path=path, container="safetensors", tensors=tensors, metadata=meta)


# ---- torch.save files ----------------------------------------------------------------------------------------------

def _torch_load(path: Path, container: str, map_location: str) -> Any:
    """``torch.load`` in its safe mode; zip files are memory-mapped so only touched tensors are read."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=container == "torch-zip")
    except FileNotFoundError:
        raise FileNotFoundError(f"Weights file not found: {path}") from None
    except MemoryError:
        raise
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ValueError, ...
        raise _translate_torch_error(path, error) from error


def flatten_nested(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(dotted_name, leaf)`` for every leaf of nested dicts, lists and tuples."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from flatten_nested(value, f"{prefix}{key}.")
    elif isinstance(obj, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple, torch.Tensor)) for v in obj):
        for index, value in enumerate(obj):
            yield from flatten_nested(value, f"{prefix}{index}.")
    else:
        yield prefix[:-1], obj


def _check_zip(path: Path) -> None:
    """Validate a torch zip file's directory (stored at its end) before torch maps it: precise messages."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.header_offset + info.compress_size > size:
                    raise _corrupt(path, f"its entry '{info.filename}' runs past the end of the file")
    except zipfile.BadZipFile as error:
        raise _corrupt(path, f"the archive's directory at the end of the file is missing or damaged: {error}") from None


def _read_torch_header(path: Path, container: str) -> FileHeader:
    if container == "torch-zip":
        _check_zip(path)
    obj = _torch_load(path, container, map_location="meta")
    if isinstance(obj, torch.Tensor):
        raise WrongCheckpointError(f"'{path.name}' holds a single tensor, not a state dict. Full path: {path}")
    if not isinstance(obj, Mapping):
        raise WrongCheckpointError(
            f"'{path.name}' holds a {type(obj).__name__}, not a state dict. Full path: {path}"
        )
    tensors: dict[str, TensorInfo] = {}
    others: dict[str, str] = {}
    for name, leaf in flatten_nested(obj):
        if isinstance(leaf, torch.Tensor):
            tensors[name] = TensorInfo(tuple(leaf.shape), _TORCH_TO_CODE.get(leaf.dtype, str(leaf.dtype)))
        elif "." not in name:  # keep top-level scalars (epoch, step, ...) as hints
            others[name] = repr(leaf)[:80]
    return FileHeader(path=path, container=container, tensors=tensors, metadata=others)


# ---- public reading API ------------------------------------------------------------------------------------------

_CACHE_LIMIT = 256
_cache: OrderedDict[tuple[str, int, int], FileHeader] = OrderedDict()
_cache_lock = threading.Lock()


def _cache_key(path: Path) -> tuple[str, int, int]:
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"Weights file not found: {path}") from None
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


def read_header(path: str | os.PathLike[str]) -> FileHeader:
    """Names, shapes and dtypes of every tensor in ``path`` without reading tensor data (cached).

    Raises :class:`~mmaudio.errors.WrongCheckpointError` for a truncated, corrupt or unsafe file and
    ``FileNotFoundError`` for a missing one.
    """
    path = Path(path)
    key = _cache_key(path)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return cached
    container = _sniff(path)
    header = _read_safetensors_header(path) if container == "safetensors" else _read_torch_header(path, container)
    with _cache_lock:
        _cache[key] = header
        while len(_cache) > _CACHE_LIMIT:
            _cache.popitem(last=False)
    return header


def read_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """``{tensor name: shape}`` of ``path``, nested dicts flattened with ``.``; reads no tensor data."""
    return read_header(path).shapes()


def clear_header_cache() -> None:
    """Forget cached headers (tests, or after files were rewritten within one mtime tick)."""
    with _cache_lock:
        _cache.clear()


def load_tensors(
    path: str | os.PathLike[str],
    select: Callable[[str], bool] | None = None,
) -> dict[str, torch.Tensor]:
    """Load the tensors of ``path`` whose flattened name passes ``select`` (all when ``None``), on the CPU.

    safetensors files are read tensor by tensor, so unselected tensors cost nothing; zip-format PyTorch files
    are memory-mapped, so unselected tensors are never paged in.
    """
    path = Path(path)
    header = read_header(path)  # validates the file and gives precise errors before anything is loaded
    names = [name for name in header.tensors if select is None or select(name)]
    if header.container == "safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                return {name: handle.get_tensor(name) for name in names}
        except SafetensorError as error:
            raise _corrupt(path, str(error)) from error
    obj = _torch_load(path, header.container, map_location="cpu")
    wanted = set(names)
    return {name: leaf for name, leaf in flatten_nested(obj) if name in wanted and isinstance(leaf, torch.Tensor)}
