"""The GPU check of issue 15, in one call on a lent GPU: every CUDA test, then the benchmark rows of the issue's GPU
targets, with a verdict on each target (met / missed / not measured) in a JSON file and a markdown table.

    bench/gpu_check.sh OUTDIR [--reference PATH] [--wheels DIR] [--budget-s SECONDS] [--rows a,b] [--dry-run]
    python -m bench.gpu_check --out OUTDIR ...                  # the same, without the log file

What it does, in order:

1. Python packages the device image lacks (PyAV, open_clip_torch and its ftfy/wcwidth) are installed from the
   wheels in ``--wheels`` (default ``$MMAUDIO_GPU_WHEELS``, else ``.whl`` at the repository root, the device
   tool's convention) into a private folder put on ``sys.path`` and ``PYTHONPATH``. Without PyAV the library's
   engine cannot be imported (``features.streaming`` imports ``media.reading``), so every benchmark row is skipped;
   without open_clip the rows run on random features (no CLIP, no Synchformer) and the targets that need the
   chain from frames are "not measured". Each skip says why.
2. The CUDA tests: every test whose decorator skips it without CUDA (found in ``tests/`` by reading the
   decorators), run by pytest with a junit XML (``cuda_tests.xml``).
3. The benchmark rows (``bench/benchmark.py`` in this process, one row after another, random weights kept between
   rows): large_44k_v2, 8 s, 25 steps, from a synthetic IMAGE batch to the waveform with bf16 weights (with the
   reference's sampling when ``--reference`` is given), with fp8 weights, each staged (one stage's models on the
   GPU at a time), batch 8, the five variants for context, and a 60 s text-only soundtrack (windows). The
   low-VRAM row runs the benchmark's ``--lowvram`` (the runtime streams the network and CLIP block by block,
   ``mmaudio.model.block_streaming``, as the CLI's ``--lowvram`` does).
4. ``gpu_check.json`` and ``gpu_check.md`` in OUTDIR, rewritten after every row, so a run stopped by its time
   limit still leaves what it measured. ``--budget-s`` stops starting rows once that many seconds have passed.

``--dry-run`` runs all of it on the CPU with the tiny variant standing in for every variant (1 s, 2 steps), to
test the plumbing; its verdicts judge nothing.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import gc
import importlib
import importlib.metadata
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the ``bench`` package importable (repository root)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent
SCHEMA = "mmaudio-sync-gpu-check/1"
GPU_VARIANT = "large_44k_v2"
VARIANTS = ("small_16k", "small_44k", "medium_44k", "large_44k", "large_44k_v2")
PACKAGES = {"av": "av", "open_clip": "open_clip_torch", "ftfy": "ftfy"}  # import name: distribution
WHEELS_ENV = "MMAUDIO_GPU_WHEELS"
REFERENCE_ENV = "MMAUDIO_REFERENCE_CODE"
DEFAULT_BUDGET_S = 420.0  # leaves room in one 600 s device command for the start, the tests and a slow row
NOT_WIRED = "not wired yet"
PAPER_SECONDS = {"small_16k": 1.23, "large_44k": 1.96}


# ---- rows --------------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One benchmark run: ``args`` are bench/benchmark.py options (device, sizes and repeats come on top)."""

    name: str
    description: str
    variant: str
    args: list[str]
    repeats: int = 3
    from_frames: bool = True  # the whole chain from a synthetic IMAGE batch (needs open_clip)
    text_only: bool = False  # --features none (needs open_clip for the text)
    same_as: str | None = None  # measured by another row (its result is shown for this one too)
    status: str = "pending"  # pending | ok | degraded | skipped | error | not wired yet | not run
    note: str = ""
    command: str = ""
    result: dict[str, Any] | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None


def plan_rows(*, dry_run: bool, reference: Path | None) -> list[Row]:
    """The rows of the check, in the order they run (the issue's targets first)."""
    ref = ["--reference", str(reference)] if reference is not None else []
    bf16, fp8 = ["--dtype", "bf16"], ["--dtype", "fp8"]
    rows = [
        Row("bf16", f"{GPU_VARIANT}, bf16 weights, frames to waveform, all models resident", GPU_VARIANT,
            [*bf16, *ref, "--quality-dtypes", "bf16,fp8"]),
        Row("fp8", f"{GPU_VARIANT}, fp8 weights (bf16 compute), frames to waveform, all resident", GPU_VARIANT,
            [*fp8, "--no-two-pass", "--no-quality"]),
        Row("staged_bf16", f"{GPU_VARIANT}, bf16, --staged: one stage's models on the GPU at a time, moves timed",
            GPU_VARIANT, [*bf16, "--staged", "--no-two-pass", "--no-quality"]),
        Row("staged_fp8", f"{GPU_VARIANT}, fp8, --staged", GPU_VARIANT,
            [*fp8, "--staged", "--no-two-pass", "--no-quality"]),
        Row("low_vram_streamed", f"{GPU_VARIANT}, bf16, low-VRAM mode (--lowvram): other stages staged, the "
            "network and CLIP streamed block by block", GPU_VARIANT,
            [*bf16, "--lowvram", "--no-two-pass", "--no-quality"]),
        Row("batch8", f"{GPU_VARIANT}, bf16, 8 samples of one clip in one generation (throughput)", GPU_VARIANT,
            [*bf16, "--batch", "8", "--no-two-pass", "--no-quality"], repeats=2),
    ]
    for variant in VARIANTS:
        if variant == GPU_VARIANT:
            rows.append(Row(f"variant_{variant}", f"{variant}, bf16, frames to waveform (context)", variant, [],
                            same_as="bf16"))
        else:
            rows.append(Row(f"variant_{variant}", f"{variant}, bf16, frames to waveform (context)", variant,
                            [*bf16, "--no-two-pass", "--no-quality"], repeats=2))
    rows.append(Row("long_60s", f"{GPU_VARIANT}, bf16, a 60 s text-only soundtrack (overlapping 8 s windows)",
                    GPU_VARIANT, [*bf16, "--duration", "60", "--features", "none", "--no-two-pass", "--no-quality"],
                    repeats=1, from_frames=False, text_only=True))
    if dry_run:
        for row in rows:
            row.description = f"[dry run: tiny stand-in] {row.description}"
    return rows


def row_argv(row: Row, *, dry_run: bool, repeats: int | None) -> list[str]:
    """bench/benchmark.py options of one row."""
    args = list(row.args)
    repeats = repeats or row.repeats
    if dry_run:  # the CPU, the tiny variant, 1 s (12 s for the windowed row), 2 steps
        duration = "12" if "--duration" in args else "1"
        if "--duration" in args:
            i = args.index("--duration")
            del args[i:i + 2]
        if "--quality-dtypes" in args:
            args += ["--quality-steps", "2"]
        return ["--variants", "tiny", "--device", "cpu", "--threads", "1", "--duration", duration, "--steps", "2",
                "--repeats", "1", "--warmup", "0", "--video-size", "48x64", "--video-fps", "10", "--quiet", *args]
    return ["--variants", row.variant, "--device", "cuda", "--steps", "25", "--repeats", str(repeats),
            "--warmup", "1", *args]


# ---- packages from wheels ------------------------------------------------------------------------------------
def wheel_folder(given: str | None) -> Path | None:
    """``--wheels``, else ``$MMAUDIO_GPU_WHEELS``, else ``.whl`` at the repository root if it exists."""
    for candidate in (given, os.environ.get(WHEELS_ENV)):
        if candidate:
            return Path(candidate)
    default = REPO / ".whl"
    return default if default.is_dir() else None


def install_wheels(folder: Path | None, target: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Install every wheel of ``folder`` into ``target`` (offline, no dependencies resolved) and put ``target``
    first on ``sys.path`` and ``PYTHONPATH`` (for the pytest subprocess). Nothing to do without wheels."""
    report: dict[str, Any] = {"folder": None if folder is None else str(folder), "wheels": [], "installed": False}
    if folder is None:
        report["note"] = f"no wheel folder (--wheels, ${WHEELS_ENV} or .whl)"
        return report
    wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    report["wheels"] = [w.name for w in wheels]
    if not wheels:
        report["note"] = f"{folder}: no wheels there"
        return report
    target.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--upgrade", "--target", str(target), *map(str, wheels)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        report["note"] = f"pip install failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}"
        log(report["note"])
        return report
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH")) if p)
    importlib.invalidate_caches()
    report.update(installed=True, target=str(target))
    log(f"installed {len(wheels)} wheel(s) from {folder} into {target}")
    return report


def package_versions() -> dict[str, str | None]:
    """Version of each package the check may need, None where it cannot be imported."""
    found: dict[str, str | None] = {}
    for module, distribution in PACKAGES.items():
        try:
            importlib.import_module(module)
        except Exception:  # any import failure means the package is unusable here
            found[module] = None
            continue
        try:
            found[module] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            found[module] = "unknown version"
    return found


def degrade(rows: list[Row], packages: dict[str, str | None]) -> None:
    """Skip or narrow the rows that need a package that is missing, saying why."""
    for row in rows:
        if row.status != "pending" or row.same_as:
            continue
        if packages.get("av") is None:
            row.status = "skipped"
            row.note = ("PyAV (av) is missing: mmaudio.engine cannot be imported without it (features.streaming "
                        "imports media.reading); carry its wheel (--wheels)")
        elif (row.from_frames or row.text_only) and (packages.get("open_clip") is None or packages.get("ftfy") is None):
            if "--features" in row.args:
                i = row.args.index("--features")
                del row.args[i:i + 2]
            row.args += ["--features", "random"]
            row.status = "degraded"
            row.note = ("open_clip_torch (or ftfy) is missing: random features of the real shapes instead of CLIP "
                        "and Synchformer on frames; the targets that need the chain from frames are not measured")
            row.from_frames = row.text_only = False


# ---- CUDA tests --------------------------------------------------------------------------------------------
def _mentions_cuda_skip(text: str) -> bool:
    text = text.replace(" ", "")
    return "cuda" in text.lower() and ("skip" in text or "mark.cuda" in text)


def discover_cuda_tests(tests_dir: Path) -> list[str]:
    """Node ids of the tests that need CUDA: functions or classes whose decorators skip them without CUDA (or
    carry a ``cuda`` mark), and whole modules whose ``pytestmark`` does."""
    found: list[str] = []
    for path in sorted(tests_dir.rglob("test_*.py")):
        source = path.read_text(encoding="utf-8")
        if "cuda" not in source:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        relative = path.relative_to(tests_dir.parent).as_posix()
        module_mark = any(
            isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets)
            and _mentions_cuda_skip(ast.get_source_segment(source, node.value) or "")
            for node in tree.body)
        if module_mark:
            found.append(relative)
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and any(
                    _mentions_cuda_skip(ast.get_source_segment(source, d) or "") for d in node.decorator_list):
                found.append(f"{relative}::{node.name}")
    return found


def _junit_counts(path: Path) -> dict[str, Any]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    cases = []
    for case in root.iter("testcase"):
        outcome = "passed"
        message = ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or "")[:300]
        cases.append({"id": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome, "message": message})
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["cases"] = cases
    return counts


def run_cuda_tests(out: Path, *, timeout: float, log: Callable[[str], None]) -> dict[str, Any]:
    ids = discover_cuda_tests(REPO / "tests")
    report: dict[str, Any] = {"node_ids": ids, "junit": "cuda_tests.xml"}
    if not ids:
        report.update(verdict="none found")
        return report
    junit = out / "cuda_tests.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
               "--continue-on-collection-errors", f"--junitxml={junit}", *ids]
    log("CUDA tests: " + " ".join(ids))
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        report.update(verdict="timed out", seconds=timeout)
        return report
    report["seconds"] = time.perf_counter() - started
    report["returncode"] = done.returncode
    report["output_tail"] = (done.stdout + done.stderr)[-3000:]
    log(report["output_tail"])
    if not junit.is_file():
        report["verdict"] = "no junit written"
        return report
    report.update(_junit_counts(junit))
    if report["failures"] or report["errors"]:
        report["verdict"] = "failed"
    elif report["passed"] == 0:
        report["verdict"] = "all skipped"
    else:
        report["verdict"] = "passed"
    return report


# ---- running the rows --------------------------------------------------------------------------------------
def _median(stage: dict[str, Any] | None, key: str = "seconds") -> float | None:
    if not stage or key not in stage:
        return None
    return stage[key].get("median")


def summarize_result(result: dict[str, Any]) -> dict[str, Any]:
    """The figures of one benchmark result that the table and the targets use."""
    stages = result["stages"]
    end = stages.get("end_to_end") or {}
    seconds = _median(end)
    ratios = result.get("ratios") or {}
    agreement = (result.get("reference") or {}).get("latent_agreement") or {}
    return {
        "variant": result["variant"], "device": result["device"], "dtype": result["dtype"],
        "features": result.get("features"), "staged": result.get("staged"), "batch": result.get("batch", 1),
        "soundtrack_seconds": result.get("soundtrack_seconds"), "windows": (result.get("windows") or {}).get("count"),
        "end_to_end_s": seconds, "encoding_s": _median(stages.get("features")),
        "sampling_s": _median(stages.get("sampling")), "step_s": _median(stages.get("sampling"), "step_seconds"),
        "decoding_s": _median(stages.get("decoding")), "moves_s": _median(stages.get("moves")),
        "peak_bytes": end.get("peak_bytes"), "host_rss_peak_bytes": result.get("host_rss_peak_bytes"),
        "samples_per_second": (result.get("batch", 1) / seconds) if seconds else None,
        "sampling_over_reference": ratios.get("sampling_over_reference"),
        "reference_rel_l2": agreement.get("rel_l2"),
        "reference_note": (result.get("reference") or {}).get("skipped"),
        "memory_measure": result.get("memory_measure"),
    }


def run_row(row: Row, *, dry_run: bool, repeats: int | None, log: Callable[[str], None]) -> None:
    """One row through bench/benchmark.py's main, in this process; its outcome goes into ``row``."""
    from bench import benchmark  # after the wheels: the library imports PyAV

    argv = row_argv(row, dry_run=dry_run, repeats=repeats)
    row.command = "python bench/benchmark.py " + " ".join(argv)
    log(f"== row {row.name}: {row.command}")
    started = time.perf_counter()
    try:
        report = benchmark.main(argv)
    except (Exception, SystemExit) as exc:  # one row's failure must not stop the others
        row.status = "error"
        row.note = f"{type(exc).__name__}: {exc}"
        row.result = {"traceback": traceback.format_exc()[-4000:]}
        log(row.result["traceback"])
    else:
        row.result = report["results"][0]
        row.summary = summarize_result(row.result)
        if row.status == "pending":
            row.status = "ok"
    finally:
        row.seconds = time.perf_counter() - started
        gc.collect()
        with contextlib.suppress(Exception):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


# ---- targets -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    name: str
    row: str
    metric: str  # a key of the row summary
    limit: float
    unit: str  # "s", "GB" or "x"
    needs_frames: bool = True
    context: bool = False


TARGETS = (
    Target(f"{GPU_VARIANT} end to end, frames to waveform with the models on the GPU, bf16, <= 0.5 s (all models "
           "resident; frame choice and resizing of the IMAGE batch on the CPU, as ComfyUI holds it)", "bf16",
           "end_to_end_s", 0.5, "s"),
    Target(f"{GPU_VARIANT} peak GPU memory, bf16 weights, <= 4.5 GB (all models resident)", "bf16", "peak_bytes",
           4.5e9, "GB"),
    Target(f"{GPU_VARIANT} peak GPU memory, bf16 weights, <= 4.5 GB (--staged)", "staged_bf16", "peak_bytes", 4.5e9,
           "GB"),
    Target(f"{GPU_VARIANT} peak GPU memory, fp8 weights, <= 3.5 GB (all models resident)", "fp8", "peak_bytes",
           3.5e9, "GB"),
    Target(f"{GPU_VARIANT} peak GPU memory, fp8 weights, <= 3.5 GB (--staged)", "staged_fp8", "peak_bytes", 3.5e9,
           "GB"),
    Target(f"{GPU_VARIANT} peak GPU memory in the low-VRAM mode (network and CLIP streamed block by block), <= 2 GB",
           "low_vram_streamed", "peak_bytes", 2e9, "GB"),
    Target(f"{GPU_VARIANT} sampling >= 2x the reference's speed on the same GPU (bf16, both including the "
           "conditions projection)", "bf16", "sampling_over_reference", 0.5, "x", needs_frames=False),
    *(Target(f"(context) {variant} end to end, 8 s clip, against the paper's {paper} s (H100-class GPU)",
             f"variant_{variant}", "end_to_end_s", paper, "s", context=True)
      for variant, paper in PAPER_SECONDS.items()),
)


def _format(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "GB":
        return f"{value / 1e9:.2f} GB"
    if unit == "x":
        return f"{value:.3f}x (ours / reference; {1 / value:.2f}x the reference's speed)" if value else "-"
    return f"{value:.3f} s"


def judge(rows: list[Row]) -> list[dict[str, Any]]:
    """Each target: met / missed / not measured, from its row, with the figure and why."""
    by_name = {row.name: row for row in rows}
    verdicts = []
    for target in TARGETS:
        row = by_name[target.row]
        if row.same_as:
            row = by_name[row.same_as]
        value = row.summary.get(target.metric) if row.status in ("ok", "degraded") else None
        entry: dict[str, Any] = {"name": target.name, "row": target.row, "limit": target.limit, "unit": target.unit,
                                 "context": target.context, "value": value}
        if row.status == NOT_WIRED:
            entry.update(verdict="not measured", detail=f"{NOT_WIRED}: {row.note}")
        elif row.status not in ("ok", "degraded"):
            entry.update(verdict="not measured", detail=f"row {row.name} {row.status}: {row.note or 'not run'}")
        elif target.needs_frames and row.summary.get("features") != "all":
            entry.update(verdict="not measured", value=None,
                         detail=f"row {row.name} ran on {row.summary.get('features')} features, not from frames: "
                                f"{row.note}")
        elif value is None:
            why = "no figure in the row's result"
            if target.metric == "sampling_over_reference":
                why = row.summary.get("reference_note") or f"no reference checkout given (--reference or " \
                                                           f"${REFERENCE_ENV})"
            entry.update(verdict="not measured", detail=why)
        else:
            met = value <= target.limit
            entry.update(verdict="met" if met else "missed",
                         detail=f"{_format(value, target.unit)} against {_format(target.limit, target.unit)}")
        verdicts.append(entry)
    return verdicts


# ---- report ------------------------------------------------------------------------------------------------
def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _cell(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "GB":
        return f"{value / 1e9:.2f} GB"
    return f"{value:.2f}"


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = ["# MMAudio GPU check (issue 15)", ""]
    if report["dry_run"]:
        lines += ["**DRY RUN** on the CPU with the tiny variant standing in for every variant (1 s, 2 steps): it "
                  "tests the plumbing; its figures and verdicts judge nothing.", ""]
    lines += [f"- machine: {env.get('gpu') or env.get('cpu')}; torch {env.get('torch')}, CUDA {env.get('cuda')}; "
              f"commit {env.get('commit')}; {report['created']}",
              "- packages: " + ", ".join(f"{k} {v or 'MISSING'}" for k, v in report["packages"].items())
              + f" (wheels: {len(report['wheels'].get('wheels', []))} from {report['wheels'].get('folder')})",
              f"- peak memory: {report.get('memory_measure') or '-'}", ""]
    tests = report.get("cuda_tests") or {}
    lines += ["## CUDA tests", ""]
    if tests:
        lines.append(f"{tests.get('verdict')}: {tests.get('passed', 0)} passed, {tests.get('failures', 0)} failed, "
                     f"{tests.get('errors', 0)} errors, {tests.get('skipped', 0)} skipped (junit: "
                     f"{tests.get('junit')}); tests: {', '.join(tests.get('node_ids', []))}")
        for case in tests.get("cases", []):
            if case["outcome"] != "passed":
                lines.append(f"- {case['id']}: {case['outcome']} {case['message']}")
    else:
        lines.append("not run")
    lines += ["", "## Benchmark rows (medians; peak = max_memory_allocated over the generation on CUDA, process RSS on "
              "the CPU)", "",
              "| row | what | weights | features | batch | soundtrack | end to end | encoding | sampling | step | "
              "decoding | moves | peak memory | status |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        s = row["summary"]
        track = "-" if s.get("soundtrack_seconds") is None else (
            f"{s['soundtrack_seconds']:g} s" + (f", {s['windows']} windows" if (s.get("windows") or 1) > 1 else ""))
        status = row["status"] + (f" ({row['same_as']})" if row.get("same_as") else "")
        if row.get("note"):
            status += f": {row['note']}"
        lines.append(f"| {row['name']} | {row['description']} | {s.get('dtype', '-')} | {s.get('features', '-')} | "
                     f"{s.get('batch', '-')} | {track} | {_cell(s.get('end_to_end_s'), 's')} | "
                     f"{_cell(s.get('encoding_s'), 's')} | {_cell(s.get('sampling_s'), 's')} | "
                     f"{_cell(s.get('step_s'), 's')} | {_cell(s.get('decoding_s'), 's')} | "
                     f"{_cell(s.get('moves_s'), 's')} | {_cell(s.get('peak_bytes'), 'GB')} | {status} |")
    lines += ["", "## Targets", "", "| target | verdict | measured | detail |", "|---|---|---|---|"]
    for target in report["targets"]:
        verdict = {"met": "MET", "missed": "MISSED"}.get(target["verdict"], target["verdict"])
        lines.append(f"| {target['name']} | {verdict} | {_format(target['value'], target['unit'])} | "
                     f"{target['detail']} |")
    lines += ["", "## Commands of the rows", ""]
    lines += [f"- {row['name']}: `{row['command']}`" for row in report["rows"] if row.get("command")]
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict[str, Any]) -> None:
    report = _finite(report)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_check.md").write_text(markdown(report))


def _environment(dry_run: bool) -> dict[str, Any]:
    import torch

    from bench.report import cpu_model, git_commit

    env: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
                           "cpu": cpu_model(), "commit": git_commit()}
    if torch.cuda.is_available() and not dry_run:
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_bytes=props.total_memory)
    return env


def _row_record(row: Row) -> dict[str, Any]:
    return {"name": row.name, "description": row.description, "variant": row.variant, "status": row.status,
            "note": row.note, "same_as": row.same_as, "command": row.command, "seconds": row.seconds,
            "summary": row.summary, "benchmark": row.result}


# ---- main --------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json, gpu_check.md, cuda_tests.xml")
    p.add_argument("--dry-run", action="store_true", help="everything on the CPU with tiny stand-ins (plumbing test)")
    p.add_argument("--wheels", default=None, help=f"folder of wheels to install first (default ${WHEELS_ENV}, else "
                   ".whl at the repository root)")
    p.add_argument("--site", type=Path, default=None, help="where the wheels are installed (default: a new temporary "
                   "folder)")
    p.add_argument("--reference", type=Path, default=None,
                   help=f"checkout of hkchengrex/MMAudio for the sampling ratio (default ${REFERENCE_ENV})")
    p.add_argument("--rows", default=None, help="comma-separated row names to run (default: all)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats of every row (default: per row)")
    p.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                   help=f"start no row after this many seconds (default {DEFAULT_BUDGET_S:g})")
    p.add_argument("--no-tests", action="store_true", help="skip the CUDA tests")
    p.add_argument("--test-timeout", type=float, default=240.0, help="seconds for the CUDA tests (default 240)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.site is not None:
        return check(args, args.site)
    with tempfile.TemporaryDirectory(prefix="mmaudio-gpu-site-") as site:  # removed with what was installed
        return check(args, Path(site))


def check(args: argparse.Namespace, site: Path) -> int:
    """The whole check (see the module docstring); the exit status of the command."""
    started = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    wheels = install_wheels(wheel_folder(args.wheels), site, log)
    packages = package_versions()
    log(f"packages: {packages}")
    reference = args.reference or (Path(os.environ[REFERENCE_ENV]) if os.environ.get(REFERENCE_ENV) else None)
    rows = plan_rows(dry_run=args.dry_run, reference=reference)
    if args.rows:
        wanted = {name.strip() for name in args.rows.split(",") if name.strip()}
        unknown = wanted - {row.name for row in rows}
        if unknown:
            raise SystemExit(f"--rows: unknown row(s) {', '.join(sorted(unknown))}; rows: "
                             f"{', '.join(row.name for row in rows)}")
        for row in rows:
            if row.name not in wanted and row.status == "pending":
                row.status, row.note = "not run", "not selected (--rows)"
    degrade(rows, packages)

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; use --dry-run to test the plumbing on the CPU")
    report: dict[str, Any] = {
        "schema": SCHEMA, "dry_run": args.dry_run,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "environment": _environment(args.dry_run),
        "packages": packages, "wheels": wheels, "reference": None if reference is None else str(reference),
        "budget_seconds": args.budget_s, "cuda_tests": None, "rows": [], "targets": [],
    }

    def save() -> None:
        report["rows"] = [_row_record(row) for row in rows]
        report["memory_measure"] = next((row.summary["memory_measure"] for row in rows if row.summary), None)
        report["targets"] = judge(rows)
        report["wall_seconds"] = time.perf_counter() - started
        write_report(out, report)

    save()
    if not args.no_tests:
        report["cuda_tests"] = run_cuda_tests(out, timeout=args.test_timeout, log=log)
        save()

    from bench import components

    components.keep_random_weights()  # one random draw per model for all rows
    for row in rows:
        if row.same_as or row.status not in ("pending", "degraded"):
            continue
        if time.perf_counter() - started > args.budget_s:
            row.status, row.note = "not run", f"the time budget ({args.budget_s:g} s) was spent"
            continue
        run_row(row, dry_run=args.dry_run, repeats=args.repeats, log=log)
        save()
    for row in rows:
        if row.same_as:
            source = next(r for r in rows if r.name == row.same_as)
            row.status, row.summary = source.status, source.summary
            row.note = f"measured by row {source.name}"
    components.keep_random_weights(False)
    save()
    log((out / "gpu_check.md").read_text())
    tests_failed = (report["cuda_tests"] or {}).get("verdict") in ("failed", "timed out", "no junit written")
    return 1 if tests_failed or any(row.status == "error" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
