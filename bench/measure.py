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


def process_peak_rss() -> int:
    """This process's peak resident set (``VmHWM``) as it stands: its lifetime peak unless a :class:`HostMemory`
    has reset it (CPU runs reset it per stage)."""
    kib = _status_kib("VmHWM")
    return kib * 1024 if kib is not None else _rusage_peak_bytes()


@contextmanager
def cpu_allocated_peak() -> Iterator[dict[str, int]]:
    """The peak of bytes PyTorch's CPU allocator handed out and had not taken back inside the block (tensors and
    the kernels' own buffers, from the profiler's allocation events; not what the C allocator keeps cached),
    stored under "peak" on exit."""
    result: dict[str, int] = {}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        yield result
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    result["peak"] = peak


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
    index: int = 0  # order of beginning within the run


class RunRecorder:
    """Marks the stages of one run; read :meth:`results` once the run is over (one device sync in all).

    Stages may nest (``end_to_end`` around the engine's stages, ``conditions`` inside the reference's
    ``sampling``): a stage's peak covers its inner stages, although each stage resets the probe's peak when it
    begins (the peak so far is handed to the stages still open first). A name recorded more than once in a run
    (a stage the engine enters twice) is reported once, with its times added up and its largest peak.
    """

    def __init__(self, device: torch.device, memory: HostMemory | CudaMemory | None = None) -> None:
        self.clock = Clock(device)
        self.memory = memory or memory_probe(device)
        self.stages: list[StageRecord] = []
        self._open: list[StageRecord] = []
        self._begun = itertools.count()

    def _fold_peak(self) -> None:
        """Hand the probe's peak since its last reset to every stage still open (all began before that reset)."""
        peak = self.memory.peak()
        for record in self._open:
            record.memory_peak = max(record.memory_peak, peak)

    def begin(self, name: str) -> StageRecord:
        """Open a stage (see :meth:`stage`); close it with :meth:`end`."""
        self._fold_peak()
        self.memory.reset_peak()
        record = StageRecord(name, index=next(self._begun))
        record.memory_before = record.memory_peak = self.memory.current()
        self._open.append(record)
        record.cpu_start = time.process_time()
        record.start = self.clock.mark()
        return record

    def end(self, record: StageRecord) -> None:
        record.end = self.clock.mark()
        record.cpu_end = time.process_time()
        self._fold_peak()
        self._open.remove(record)
        self.stages.append(record)

    @contextmanager
    def stage(self, name: str) -> Iterator[StageRecord]:
        record = self.begin(name)
        try:
            yield record
        finally:
            self.end(record)

    def is_open(self, record: StageRecord | None) -> bool:
        return record is not None and any(r is record for r in self._open)

    def step(self) -> None:
        """Mark the end of one step of the innermost open stage (a sampler callback)."""
        if self._open:
            self._open[-1].steps.append(self.clock.mark())

    def results(self) -> dict[str, dict[str, Any]]:
        """Per stage: seconds, step seconds (if any), process CPU seconds, peak bytes and the peak's excess over
        the stage's starting level, in the order the stages began."""
        self.clock.synchronize()
        out: dict[str, dict[str, Any]] = {}
        for rec in sorted(self.stages, key=lambda r: r.index):
            marks = [rec.start, *rec.steps]
            entry = {
                "seconds": self.clock.seconds(rec.start, rec.end),
                "step_seconds": [self.clock.seconds(a, b) for a, b in itertools.pairwise(marks)],
                "cpu_seconds": rec.cpu_end - rec.cpu_start,
                "peak_bytes": rec.memory_peak,
                "peak_delta_bytes": rec.memory_peak - rec.memory_before,
                "count": 1,
            }
            if rec.name in out:
                seen = out[rec.name]
                entry = {"seconds": seen["seconds"] + entry["seconds"],
                         "step_seconds": seen["step_seconds"] + entry["step_seconds"],
                         "cpu_seconds": seen["cpu_seconds"] + entry["cpu_seconds"],
                         "peak_bytes": max(seen["peak_bytes"], entry["peak_bytes"]),
                         "peak_delta_bytes": max(seen["peak_delta_bytes"], entry["peak_delta_bytes"]),
                         "count": seen["count"] + 1}
            out[rec.name] = entry
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
