"""Timing and peak-memory probes that work the same way on the CPU and on a CUDA device.

CPU: wall-clock ``time.perf_counter``; memory is the process's resident set, its peak reset before each stage
by writing ``5`` to ``/proc/self/clear_refs`` (Linux), so a stage's peak is its own, not the process's. Where
that reset is impossible the lifetime peak (``VmHWM`` / ``getrusage``) is reported and marked as such.
CUDA: ``torch.cuda.Event`` pairs (no host synchronisation inside a stage, one at the end of a run) and the
caching allocator's ``max_memory_allocated`` after ``reset_peak_memory_stats``.
"""

from __future__ import annotations

import itertools
import os
import re
import resource
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

MIB = 1024**2
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


# ---- memory ------------------------------------------------------------------------------------------------
def _status_kib(field_name: str) -> int | None:
    try:
        match = re.search(rf"^{field_name}:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _rusage_peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


class HostMemory:
    """Resident memory of this process: current, and the peak since the last :meth:`reset_peak`."""

    kind = "cpu_rss"

    def __init__(self) -> None:
        self.resettable = self._try_reset()

    @staticmethod
    def _try_reset() -> bool:
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            return False
        return _status_kib("VmHWM") is not None

    def current(self) -> int:
        kib = _status_kib("VmRSS")
        return kib * 1024 if kib is not None else _rusage_peak_bytes()

    def reset_peak(self) -> None:
        if self.resettable:
            self.resettable = self._try_reset()

    def peak(self) -> int:
        kib = _status_kib("VmHWM")
        return kib * 1024 if kib is not None else _rusage_peak_bytes()

    def describe(self) -> str:
        if self.resettable:
            return "process resident set (RSS); peak reset per stage via /proc/self/clear_refs"
        return "process resident set (RSS); lifetime peak (per-stage reset unavailable): deltas are lower bounds"


class CudaMemory:
    """Bytes held by tensors in PyTorch's caching allocator on one CUDA device."""

    kind = "cuda_allocated"

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def current(self) -> int:
        return int(torch.cuda.memory_allocated(self.device))

    def reset_peak(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int:
        return int(torch.cuda.max_memory_allocated(self.device))

    def describe(self) -> str:
        return "torch.cuda.max_memory_allocated (tensors only; the allocator's cache and the CUDA context excluded)"


def memory_probe(device: torch.device) -> HostMemory | CudaMemory:
    return CudaMemory(device) if device.type == "cuda" else HostMemory()


# ---- clocks ------------------------------------------------------------------------------------------------
class Clock:
    """Time marks on a device. CPU marks are host times; CUDA marks are recorded events, read after a sync."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        if self.device.type == "mps":
            torch.mps.synchronize()
        return time.perf_counter()

    def synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()

    def seconds(self, start: Any, end: Any) -> float:
        """Seconds between two marks (call :meth:`synchronize` first on CUDA)."""
        if self.cuda:
            return float(start.elapsed_time(end)) / 1000.0
        return float(end - start)


# ---- stage recording -----------------------------------------------------------------------------------------
@dataclass
class StageRecord:
    """One stage of one run: its marks (start, per-step..., end) and memory figures in bytes."""

    name: str
    start: Any = None
    end: Any = None
    steps: list[Any] = field(default_factory=list)
    memory_before: int = 0
    memory_peak: int = 0
    cpu_start: float = 0.0  # process CPU time (all threads), for CPU runs on a shared machine
    cpu_end: float = 0.0


class RunRecorder:
    """Marks the stages of one run; read :meth:`results` once the run is over (one device sync in all)."""

    def __init__(self, device: torch.device, memory: HostMemory | CudaMemory | None = None) -> None:
        self.clock = Clock(device)
        self.memory = memory or memory_probe(device)
        self.stages: list[StageRecord] = []
        self._open: StageRecord | None = None

    @contextmanager
    def stage(self, name: str) -> Iterator[StageRecord]:
        record = StageRecord(name)
        self.memory.reset_peak()
        record.memory_before = self.memory.current()
        self._open = record
        record.cpu_start = time.process_time()
        record.start = self.clock.mark()
        try:
            yield record
        finally:
            record.end = self.clock.mark()
            record.cpu_end = time.process_time()
            record.memory_peak = max(self.memory.peak(), record.memory_before)
            self._open = None
            self.stages.append(record)

    def step(self) -> None:
        """Mark the end of one step of the open stage (a sampler callback)."""
        if self._open is not None:
            self._open.steps.append(self.clock.mark())

    def results(self) -> dict[str, dict[str, Any]]:
        """Per stage: seconds, step seconds (if any), process CPU seconds, peak bytes and the peak's excess over
        the stage's starting level."""
        self.clock.synchronize()
        out: dict[str, dict[str, Any]] = {}
        for rec in self.stages:
            marks = [rec.start, *rec.steps]
            steps = [self.clock.seconds(a, b) for a, b in itertools.pairwise(marks)]
            out[rec.name] = {
                "seconds": self.clock.seconds(rec.start, rec.end),
                "step_seconds": steps,
                "cpu_seconds": rec.cpu_end - rec.cpu_start,
                "peak_bytes": rec.memory_peak,
                "peak_delta_bytes": rec.memory_peak - rec.memory_before,
            }
        return out


# ---- summaries ---------------------------------------------------------------------------------------------
def summarize(values: Sequence[float]) -> dict[str, Any]:
    """median / min / max / every value (seconds or bytes) of repeated measurements."""
    values = [float(v) for v in values]
    if not values:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None
