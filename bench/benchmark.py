"""Speed, memory and output agreement of the MMAudio engine, per variant and device, with random weights.

Run from the repository root, either way:

    python bench/benchmark.py --variants small_16k --device cpu --threads 2 --features random
    python -m bench.benchmark --variants small_16k,large_44k_v2 --device cuda --dtype bf16 --json out.json
    python bench/benchmark.py --variants small_16k --features random --reference /path/to/MMAudio   # vs reference
    python bench/benchmark.py --variants small_16k --features none --duration 60 --steps 25 --repeats 1  # windows

Every timed run is one generation by the library's engine (``mmaudio.engine``), driven with a runtime that
times its stages: feature extraction (frame choice and resizing, CLIP at 8 fps, Synchformer at 25 fps, CLIP
text; or, beyond 10 s, per-window features), sampling (total and per step, including the conditions projection;
guidance batched into one forward), decoding (VAE and vocoder), the whole generation end to end, and peak memory
(CPU: process RSS; CUDA: max_memory_allocated). Soundtracks longer than 10 s run as the engine's overlapping
windows. With ``--reference`` the reference network and sampler (two passes per step) sample on the same weights,
features and noise, and the time ratios and the difference of the final latents are reported. A quality guard
compares bf16 / fp16 weights and batched guidance against float32 two-pass sampling. Weights are random at the
variants' real sizes (the library's own configs); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the ``bench`` package importable (repository root)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.components import VARIANT_NAMES
from bench.library import library_module, load_library, load_reference
from bench.measure import load_average
from bench.report import environment, format_report
from bench.runs import FEATURE_MODES, Settings, measure_variant

# The paper's generation times for an 8 s clip (H100-class GPU; what the timing includes is not stated).
PAPER_SECONDS = {"small_16k": 1.23, "large_44k": 1.96}
CPU_TARGET_RATIO = 0.7  # small_16k sampling at most 0.7x the reference's time on the CPU (8 s, 25 steps, fp32)
COMPILE_MODES = ("default", "reduce-overhead")  # the engine's "compile" and "cuda_graphs"


def _video_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 360x640, got {text!r}") from None
    if height < 16 or width < 16:
        raise argparse.ArgumentTypeError(f"video size {text!r} is too small")
    return height, width


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _variants(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANT_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown variant(s) {unknown or text!r}; choose from {', '.join(VARIANT_NAMES)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", type=_variants, default=["small_16k"],
                   help=f"comma-separated, from {', '.join(VARIANT_NAMES)} (default small_16k)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--dtype", default="fp32", help="network weights: fp32, bf16, fp16 or fp8 (= fp8_e4m3fn; "
                   "computes in bf16)")
    p.add_argument("--decoder-dtype", default="fp32", help="VAE and vocoder weights (default fp32)")
    p.add_argument("--steps", type=_positive_int, default=25)
    p.add_argument("--duration", type=float, default=8.0,
                   help="soundtrack seconds (default 8); beyond 10 s the engine generates in overlapping 8 s "
                        "windows (e.g. 60, 180, 600 with --features none)")
    p.add_argument("--cfg", type=float, default=4.5)
    p.add_argument("--batch", type=_positive_int, default=1, help="samples generated together")
    p.add_argument("--repeats", type=_positive_int, default=3, help="timed runs; medians are reported")
    p.add_argument("--warmup", type=int, default=1, help="untimed 2-step runs before timing (default 1)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--features", choices=FEATURE_MODES, default="all",
                   help="conditions: all (the engine encodes a synthetic IMAGE batch: CLIP images+text and "
                        "Synchformer), sync (CLIP images masked away; CLIP ViT-H is very slow on a CPU), none "
                        "(text only: no video, CLIP text), random (no encoding: random features of the real "
                        "shapes handed to the engine's sampling stage; needs no open_clip)")
    p.add_argument("--skip-features", action="store_const", const="random", dest="features",
                   help="same as --features random")
    p.add_argument("--video-size", type=_video_size, default=(360, 640), help="source frames HxW (default 360x640)")
    p.add_argument("--video-fps", type=float, default=25.0, help="source frame rate (default 25)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network's forward (ours through the "
                   "engine's compile setting, and the reference's)")
    p.add_argument("--compile-mode", choices=COMPILE_MODES, default="default")
    p.add_argument("--cuda-graphs", action="store_const", const="reduce-overhead", dest="compile_mode",
                   help="with --compile: mode reduce-overhead (CUDA graphs)")
    p.add_argument("--no-tf32", action="store_true", help="CUDA fp32 without TF32 (the reference demo allows it)")
    p.add_argument("--no-two-pass", action="store_true", help="skip our two-pass guidance timing")
    p.add_argument("--no-quality", action="store_true", help="skip the quality guard")
    p.add_argument("--staged", action="store_true",
                   help="keep the models on the CPU and move each stage's models to the device for that stage "
                        "only (the peak then holds one stage's weights; the moves are timed)")
    p.add_argument("--lowvram", action="store_true",
                   help="like --staged, and the flow network and CLIP stream their blocks to the device one at a time "
                        "while they run (the low-VRAM mode of the CLI's --lowvram)")
    p.add_argument("--no-fast-paths", action="store_true",
                   help="time our library with Winograd convolutions and distinct-row adaLN off (A/B)")
    p.add_argument("--quality-dtypes", default=None,
                   help="weights dtypes for the quality guard (default: bf16 on a CPU, where fp16 has no fast "
                        "kernels; bf16,fp16,fp8 on CUDA)")
    p.add_argument("--quality-steps", type=_positive_int, default=None, help="steps of quality runs (default --steps)")
    p.add_argument("--reference", type=Path, default=None, help="checkout of hkchengrex/MMAudio to compare with")
    p.add_argument("--reference-dtype", default=None,
                   help="weights dtype of the reference (fp32, bf16, fp16; default: --dtype)")
    p.add_argument("--library", type=Path, default=None,
                   help="measure the mmaudio library of another checkout of this pack (e.g. with a proposed patch)")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    p.add_argument("--json", type=Path, default=None, help="write the full report here")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return device


GPU_VARIANT = "large_44k_v2"  # the GPU targets: 8 s, 25 steps
GPU_END_TO_END_S = 0.5  # bf16, from frames on the GPU to the waveform
GPU_SAMPLING_SPEEDUP = 2.0  # sampling at least twice the reference's speed on the same device
GPU_PEAK_BYTES = {"bf16": 4.5e9, "fp8_e4m3fn": 3.5e9}  # peak GPU memory of the whole clip


def _cpu_target(results: list[dict[str, Any]], settings: Settings, canonical: bool) -> dict[str, Any]:
    name = f"small_16k sampling <= {CPU_TARGET_RATIO}x the reference on the CPU (8 s, 25 steps, fp32)"
    # Video features (random or encoded): text-only conditions make every sync row alike, which flatters our
    # distinct-row adaLN against the reference.
    row = next((r for r in results if r["variant"] == "small_16k" and r["device"] == "cpu" and r["dtype"] == "fp32"
                and r.get("features") != "none"), None)
    ratio = ((row or {}).get("ratios") or {}).get("sampling_over_reference")
    if row is None or not canonical or ratio is None:
        return {"name": name, "met": None,
                "detail": "needs a CPU run of small_16k in fp32 at 8 s, 25 steps, batch 1, with video features "
                          "(--features random, sync or all) and --reference"}
    detail = (f"median of {settings.repeats}: ours {row['stages']['sampling']['seconds']['median']:.2f} s vs "
              f"reference {row['reference']['sampling']['seconds']['median']:.2f} s = {ratio:.3f}x (both including "
              f"the conditions projection); fastest steps {row['ratios']['fastest_step_over_reference']:.3f}x; "
              f"load average {load_average()}")
    return {"name": name, "ratio": ratio, "met": ratio <= CPU_TARGET_RATIO, "detail": detail}


def _gpu_row(results: list[dict[str, Any]], dtype: str) -> dict[str, Any] | None:
    """The CUDA row of the GPU variant at ``dtype`` that ran the whole chain from frames (--features all)."""
    return next((r for r in results if r["variant"] == GPU_VARIANT and r["device"].startswith("cuda")
                 and r["dtype"] == dtype and r.get("features", "all") == "all"), None)


def _residency(row: dict[str, Any]) -> str:
    return "staged: one stage's models on the GPU at a time" if row.get("staged") else "all models resident"


def _gpu_targets(results: list[dict[str, Any]], canonical: bool) -> list[dict[str, Any]]:
    targets = []
    bf16 = _gpu_row(results, "bf16") if canonical else None
    missing = f"needs a CUDA run of {GPU_VARIANT} at 8 s, 25 steps, batch 1, --features all"

    name = f"{GPU_VARIANT} end to end (frames on the GPU to waveform), bf16, <= {GPU_END_TO_END_S} s"
    if bf16 is None or "end_to_end" not in bf16["stages"]:
        targets.append({"name": name, "met": None, "detail": f"{missing}, --dtype bf16"})
    else:
        seconds = bf16["stages"]["end_to_end"]["seconds"]["median"]
        targets.append({"name": name, "seconds": seconds, "met": seconds <= GPU_END_TO_END_S,
                        "detail": f"{seconds:.3f} s on {torch.cuda.get_device_name(bf16['device'])} "
                                  f"({_residency(bf16)}; frame choice and resizing on the CPU)"})

    name = f"{GPU_VARIANT} sampling >= {GPU_SAMPLING_SPEEDUP:g}x the reference's speed on the same GPU"
    ratio = ((bf16 or {}).get("ratios") or {}).get("sampling_over_reference")
    if ratio is None:
        targets.append({"name": name, "met": None, "detail": f"{missing}, --dtype bf16, with --reference"})
    else:
        targets.append({"name": name, "ratio": ratio, "met": ratio <= 1 / GPU_SAMPLING_SPEEDUP,
                        "detail": f"ours / reference = {ratio:.3f} ({1 / ratio:.2f}x the reference's speed)"})

    for dtype, limit in GPU_PEAK_BYTES.items():
        name = f"{GPU_VARIANT} peak GPU memory, {dtype} weights, <= {limit / 1e9:g} GB"
        row = _gpu_row(results, dtype) if canonical else None
        peak = ((row or {}).get("stages", {}).get("end_to_end") or {}).get("peak_bytes")
        if peak is None:
            targets.append({"name": name, "met": None, "detail": f"{missing}, --dtype {dtype}"})
        else:
            targets.append({"name": name, "bytes": peak, "met": peak <= limit,
                            "detail": f"{peak / 1e9:.2f} GB (max_memory_allocated over the whole clip; "
                                      f"{_residency(row)})"})
    return targets


def _targets(results: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    """The issue's targets, each met / missed / not measured by this run, then the paper's figures for context."""
    canonical = settings.steps == 25 and settings.duration == 8.0 and settings.batch == 1
    targets = [_cpu_target(results, settings, canonical), *_gpu_targets(results, canonical)]
    for variant, paper in PAPER_SECONDS.items():
        row = next((r for r in results if r["variant"] == variant and r["device"].startswith("cuda")
                    and r.get("features", "all") == "all"), None)
        name = f"(context) {variant} end to end, 8 s clip, against the paper's {paper} s (H100-class GPU)"
        if row is None or not canonical:
            targets.append({"name": name, "met": None,
                            "detail": "needs a CUDA run of this variant at 8 s, 25 steps, batch 1, --features all"})
            continue
        seconds = row["stages"]["end_to_end"]["seconds"]["median"]
        targets.append({"name": name, "seconds": seconds, "met": seconds <= paper,
                        "detail": f"{seconds:.2f} s on {torch.cuda.get_device_name(row['device'])}"})
    return targets


def _finite(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        with contextlib.suppress(RuntimeError):  # only possible before the first parallel op
            torch.set_num_interop_threads(args.threads)
    device = _pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = not args.no_tf32
        torch.backends.cudnn.allow_tf32 = not args.no_tf32
    library = load_library(args.library.resolve()) if args.library else load_library()
    precision = library_module("weights.precision")

    def dtype_name(text: str) -> str:
        try:
            return precision.dtype_name(precision.parse_dtype(text))
        except ValueError as exc:
            raise SystemExit(str(exc)) from None

    quality_dtypes = args.quality_dtypes or ("bf16,fp16,fp8" if device.type == "cuda" else "bf16")
    log = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    settings = Settings(
        device=device, dtype_name=dtype_name(args.dtype), steps=args.steps, duration=args.duration,
        repeats=args.repeats, warmup=max(0, args.warmup), cfg=args.cfg, batch=args.batch, seed=args.seed,
        features=args.features, video_size=args.video_size, video_fps=args.video_fps,
        decoder_dtype_name=dtype_name(args.decoder_dtype), compile=args.compile, compile_mode=args.compile_mode,
        two_pass=not args.no_two_pass, quality=not args.no_quality, fast_paths=not args.no_fast_paths,
        staged=args.staged or args.lowvram,
        lowvram=args.lowvram,
        quality_dtypes=tuple(dtype_name(d) for d in quality_dtypes.split(",") if d.strip()),
        quality_steps=args.quality_steps, log=log,
        reference_dtype_name=dtype_name(args.reference_dtype) if args.reference_dtype else None)
    if args.reference is not None:
        try:
            settings.reference = load_reference(args.reference)
        except ImportError as exc:
            settings.reference_error = f"reference not compared: {exc}"
            log(settings.reference_error)

    started = time.time()
    load_at_start = load_average()
    results = [measure_variant(name, settings) for name in args.variants]
    report = {
        "schema": "mmaudio-sync-benchmark/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_seconds": time.time() - started,
        "environment": {**environment(device), "load_average_at_start": load_at_start},
        "settings": {
            "device": str(device), "dtype": settings.dtype_name, "decoder_dtype": settings.decoder_dtype_name,
            "steps": settings.steps, "duration": settings.duration, "cfg": settings.cfg, "batch": settings.batch,
            "repeats": settings.repeats, "warmup": settings.warmup, "seed": settings.seed,
            "features": settings.features, "video_size": list(settings.video_size), "video_fps": settings.video_fps,
            "compile": settings.compile, "compile_mode": settings.compile_mode if settings.compile else None,
            "fast_paths": settings.fast_paths, "staged": settings.staged,
            "reference": str(args.reference) if args.reference else None,
            "reference_dtype": settings.reference_dtype_name or settings.dtype_name,
            "library": str(Path(library.__file__).parent),
        },
        "results": results,
    }
    report["targets"] = _targets(results, settings)
    report = _finite(report)
    print(format_report(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        log(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
