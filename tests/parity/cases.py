"""Golden cases made by the reference MMAudio: discovery, file access and the rel-L2 check.

Everything a parity test needs is read from the case's JSON, so the same suite runs over any fixture folder
(other seeds, sizes and case names) named by ``MMAUDIO_REFERENCE_DIR``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[2]


def reference_dir() -> Path:
    """The fixture folder: ``$MMAUDIO_REFERENCE_DIR`` or ``../shared/reference`` from the repository root."""
    configured = os.environ.get("MMAUDIO_REFERENCE_DIR")
    if configured:
        return Path(configured).expanduser().resolve()
    return (REPO_ROOT.parent / "shared" / "reference").resolve()


def golden_dir() -> Path:
    return reference_dir() / "golden"


def manifest_path(name: str) -> Path:
    """Path of ``manifests/<name>`` in the fixture folder (fails clearly when missing)."""
    path = reference_dir() / "manifests" / name
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} is missing from the reference folder")
    return path


def load_manifest(name: str) -> dict[str, Any]:
    return json.loads(manifest_path(name).read_text())


@dataclass
class GoldenCase:
    """One ``golden/<case>.json`` with lazy access to its tensors."""

    path: Path
    spec: dict[str, Any] = field(repr=False)

    @classmethod
    def from_file(cls, path: Path) -> GoldenCase:
        try:
            spec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise AssertionError(f"golden case {path} is unreadable: {exc}") from exc
        if not isinstance(spec, dict) or "kind" not in spec:
            raise AssertionError(f"golden case {path} has no 'kind' field")
        return cls(path=path, spec=spec)

    @property
    def name(self) -> str:
        return self.path.name.removesuffix(".json")

    @property
    def kind(self) -> str:
        return str(self.spec["kind"])

    @property
    def dir(self) -> Path:
        return self.path.parent

    def file(self, name: str) -> Path:
        """A file of this case, next to its JSON; a missing file fails the case."""
        path = self.dir / name
        if not path.is_file():
            raise AssertionError(f"case {self.name}: file {name} is missing from {self.dir}")
        return path

    def _load_tensors(self, name: str) -> dict[str, torch.Tensor]:
        path = self.file(name)
        try:
            return load_file(str(path))
        except Exception as exc:
            raise AssertionError(f"case {self.name}: {name} is not a readable safetensors file: {exc}") from exc

    @cached_property
    def _io(self) -> dict[str, torch.Tensor]:
        io_name = self.spec.get("io_file") or f"{self.name}.io.safetensors"
        return self._load_tensors(io_name)

    def io(self) -> dict[str, torch.Tensor]:
        """Inputs (``in.*``), expected outputs (``out.*``) and intermediates (``debug.*``)."""
        return self._io

    def weights(self) -> dict[str, torch.Tensor]:
        """The case's weights file (real-checkpoint key names)."""
        name = self.spec.get("weights_file")
        if not name:
            raise AssertionError(f"case {self.name} names no weights_file")
        return self._load_tensors(name)

    def tolerance(self, output: str) -> float:
        """``tol_rel_l2`` of an output, from ``tolerance_rel_l2`` or the output's own entry."""
        table = self.spec.get("tolerance_rel_l2")
        if isinstance(table, dict) and output in table:
            return float(table[output])
        outputs = self.spec.get("outputs")
        if isinstance(outputs, dict) and isinstance(outputs.get(output), dict):
            entry = outputs[output]
            if "tol_rel_l2" in entry:
                return float(entry["tol_rel_l2"])
        raise AssertionError(f"case {self.name}: no tolerance recorded for output {output!r}")


def rel_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| over the whole tensor, in float64."""
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    denom = torch.linalg.vector_norm(e)
    diff = torch.linalg.vector_norm(a - e)
    if denom == 0:
        return float(diff)
    return float(diff / denom)


def assert_rel_l2(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> float:
    """Fail with shapes and the measured error unless ``rel_l2(actual, expected) <= tol``."""
    if tuple(actual.shape) != tuple(expected.shape):
        raise AssertionError(f"{what}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    if not torch.isfinite(actual).all():
        raise AssertionError(f"{what}: output contains NaN or inf")
    err = rel_l2(actual, expected)
    if not err <= tol:
        raise AssertionError(f"{what}: rel_l2 {err:.3e} exceeds tolerance {tol:.1e}")
    return err


def discover_cases() -> list[Path]:
    """Every ``golden/*.json`` of the fixture folder, sorted."""
    return sorted(golden_dir().glob("*.json"))
