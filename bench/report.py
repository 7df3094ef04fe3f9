"""The benchmark's printed tables and the environment block of its JSON report."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from bench.library import REPO_ROOT
from bench.measure import MIB, load_average


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(root: Path = REPO_ROOT) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load_average(),
        "commit": git_commit(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_bytes=props.total_memory, cuda=torch.version.cuda,
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    return env


# ---- formatting --------------------------------------------------------------------------------------------
def _secs(stage: dict[str, Any] | None, key: str = "seconds") -> str:
    if not stage or key not in stage or stage[key]["median"] is None:
        return "-"
    value = stage[key]["median"]
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _mib(stage: dict[str, Any] | None, key: str) -> str:
    if not stage or stage.get(key) is None:
        return "-"
    return f"{stage[key] / MIB:,.0f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    body = ["  ".join(str(c).rjust(w) if j else str(c).ljust(w) for j, (c, w) in enumerate(zip(r, widths,
                                                                                                strict=True)))
            for r in rows]
    return "\n".join([line, "-" * len(line), *body])


def format_report(report: dict[str, Any]) -> str:
    """Tables: the engine's stage times (median over repeats), memory, comparison with the reference, quality
    guard, and the verdict on each target."""
    results = report["results"]
    s = report["settings"]
    parts = [f"MMAudio benchmark: {s['duration']:g} s clip, {s['steps']} steps, cfg {s['cfg']:g}, batch {s['batch']}, "
             f"{s['repeats']} repeat(s), medians; device {s['device']} "
             f"({report['environment'].get('gpu') or report['environment']['cpu']}), "
             f"{report['environment']['torch_threads']} threads, torch {report['environment']['torch']}"]
    rows = []
    staged = any("moves" in r["stages"] for r in results)
    for r in results:
        st = r["stages"]
        fastest = (st.get("sampling") or {}).get("step_seconds", {}).get("min")
        windows = (r.get("windows") or {}).get("count", 1)
        track = f"{r.get('soundtrack_seconds', s['duration']):g} s" + (f", {windows} windows" if windows > 1 else "")
        rows.append([f"{r['variant']} {r['dtype']}", track, r.get("features", "-"), _secs(st.get("features")),
                     _secs(st.get("sampling"), "step_seconds"),
                     _secs({"fastest": {"median": fastest}}, "fastest") if fastest is not None else "-",
                     _secs(st.get("sampling")),
                     _secs(st.get("decoding")), *([_secs(st.get("moves"))] if staged else []),
                     _secs(st.get("end_to_end"))])
    parts.append("Stages of the engine's generation (sampling includes the conditions projection; decoding is VAE "
                 "and vocoder" + ("; moves: --staged transfers to and from the device" if staged else "") + ")")
    parts.append(_table(["variant", "soundtrack", "features", "encoding", "step", "fastest step", "sampling",
                         "decoding", *(["moves"] if staged else []), "end to end"], rows))
    rows = []
    for r in results:
        st = r["stages"]
        key = "first_run_peak_delta_bytes"
        rows.append([f"{r['variant']} {r['dtype']}", _mib(st.get("features"), key), _mib(st.get("sampling"), key),
                     _mib(st.get("decoding"), key), _mib(st.get("end_to_end"), "peak_bytes"),
                     f"{r['network_weight_bytes'] / MIB:,.0f}"])
    unit = "MiB, " + ("CUDA allocated" if results and results[0]["device"].startswith("cuda") else "process RSS")
    parts.append(f"Peak memory ({unit}; +stage = above the stage's starting level in the first, cold run)")
    parts.append(_table(["variant", "+encoding", "+sampling", "+decoding", "peak end to end", "network weights"],
                        rows))

    rows, notes = [], []
    for r in results:
        ref = r.get("reference") or {}
        ratios = r.get("ratios") or {}
        for key in ("features_note", "single_pass_note"):
            if r.get(key):
                notes.append(f"{r['variant']} {r['dtype']}: {r[key]}")
        if "skipped" in ref:
            notes.append(f"{r['variant']} {r['dtype']}: {ref['skipped']}")
        if not ratios:
            continue
        agreement = ref.get("latent_agreement") or {}

        def fmt(v: float | None, spec: str = ".3f") -> str:
            return "-" if v is None else format(v, spec)

        ref_dtype = "" if ref.get("dtype") in (None, r["dtype"]) else f" ({ref['dtype']})"
        rows.append([f"{r['variant']} {r['dtype']}", _secs(r["stages"].get("sampling")),
                     _secs(r.get("sampling_two_pass")), _secs(ref.get("sampling")) + ref_dtype,
                     fmt(ratios.get("sampling_over_reference")), fmt(ratios.get("fastest_step_over_reference")),
                     fmt(ratios.get("batched_over_two_pass")), fmt(agreement.get("rel_l2"), ".2e")])
    if rows:
        parts.append("Sampling, each including the conditions projection: the engine (batched guidance) / ours "
                     "(two passes) / reference (two passes); medians, and the ratio of the fastest steps (robust to "
                     "other load)")
        parts.append(_table(["variant", "ours", "ours 2-pass", "reference", "ours/ref", "fastest step ours/ref",
                             "batched/2-pass", "rel-L2 vs ref"], rows))
    parts += notes

    rows = []
    for r in results:
        q = r.get("quality")
        if not q:
            continue
        for row in q["rows"]:
            rows.append([r["variant"], row["setting"], f"{row['rel_l2']:.2e}", f"{row['cosine']:.6f}",
                         f"{row['max_abs']:.2e}"])
    if rows:
        q0 = results[0]["quality"]
        parts.append(f"Quality guard: final latents against {q0['baseline']} ({q0['steps']} steps); "
                     f"fast paths of our rows: {q0.get('fast_paths', 'off')}")
        parts.append(_table(["variant", "setting", "rel-L2", "cosine", "max |diff|"], rows))
    for target in report.get("targets", []):
        verdict = {True: "MET", False: "MISSED", None: "not measured"}[target["met"]]
        parts.append(f"Target: {target['name']}: {verdict} ({target['detail']})")
    return "\n\n".join(parts)
