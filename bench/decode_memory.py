"""Peak memory and time of decoding (or encoding) long soundtracks with full-size random-weight models.

Each duration runs in a fresh subprocess, so one run's allocations cannot hide another's. The worker builds the
full-size VAE and vocoder of the mode (seeded random weights, as :mod:`bench.components` does), runs a short clip
to start the libraries, hands freed memory back to the system, then measures the decode of a latent of the
requested length: the wall and CPU time, and two peaks next to the model's own estimate
(:meth:`AudioDecoder.decode_memory` / :meth:`AudioDecoder.encode_memory`):

- allocated: the most bytes PyTorch had allocated at once (CPU: from the profiler's allocation events;
  GPU: ``torch.cuda.max_memory_allocated`` above what was allocated before). This is what the estimate models.
- RSS (CPU): peak resident memory above what was resident before (``/proc/self/clear_refs`` resets the peak).
  It adds what the C allocator keeps after frees (fragmentation), often as much again.

    .venv/bin/python -m bench.decode_memory --mode 44k --minutes 1 3 10
    .venv/bin/python -m bench.decode_memory --mode 16k --minutes 1 --direction encode
    .venv/bin/python -m bench.decode_memory --mode 44k --minutes 1 --device cuda

Outputs are printed (one JSON line per run, then a table); nothing is written.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.components import randomize_
from bench.measure import cpu_allocated_peak, memory_probe
from mmaudio.decoder import AudioDecoder
from mmaudio.modes import mode_named
from mmaudio.vae import VAE, VAEConfig
from mmaudio.vocoder import BigVGAN, BigVGANConfig

MIB = 1024**2
WARMUP_SECONDS = 0.5


def build_codec(mode: str, seed: int, device: torch.device, with_encoder: bool) -> AudioDecoder:
    """Full-size VAE (+ encoder when asked) and vocoder of ``mode`` with seeded random weights."""
    with torch.device("meta"):
        vae = VAE(VAEConfig.for_mode(mode), with_encoder=with_encoder)
        vocoder = BigVGAN(BigVGANConfig.for_mode(mode))
    vae = randomize_(vae.to_empty(device="cpu"), seed + 1)
    vae.data_mean = torch.zeros_like(vae.data_mean)
    vae.data_std = torch.ones_like(vae.data_std)
    vae.fold_weights()
    vocoder = randomize_(vocoder.to_empty(device="cpu"), seed + 2)
    vocoder.reset_filters()
    decoder = AudioDecoder(vae.eval().requires_grad_(False), vocoder.eval().requires_grad_(False))
    return decoder.to(device)


def run_once(decoder: AudioDecoder, direction: str, seconds: float, chunk_frames: int | None,
             device: torch.device, seed: int) -> None:
    """One decode (a random latent of ``seconds``) or encode (a noise waveform of ``seconds``)."""
    generator = torch.Generator().manual_seed(seed)
    spec = mode_named(decoder.mode)
    if direction == "decode":
        frames = max(1, round(seconds * spec.latent_rate))
        latent = torch.randn(1, frames, decoder.latent_dim, generator=generator).to(device)
        decoder.decode(latent, chunk_frames=chunk_frames)
    else:
        samples = round(seconds * spec.sample_rate)
        waveform = (0.1 * torch.randn(1, samples, generator=generator)).to(device)
        decoder.encode(waveform, chunk_frames=chunk_frames)


def release_free_memory() -> None:
    """Hand memory the C allocator keeps after frees back to the system (glibc), so the resident set counts what
    is live."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Measure one run in this (fresh) process."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    decoder = build_codec(args.mode, args.seed, device, with_encoder=args.direction == "encode")
    chunk = args.chunk_frames or decoder.chunk_frames
    spec = mode_named(args.mode)
    seconds = args.minutes * 60.0
    with torch.inference_mode():
        # Libraries and thread pools start on a short clip; then the memory it freed goes back to the system, so
        # the measured run cannot reuse it unseen.
        run_once(decoder, args.direction, WARMUP_SECONDS, args.chunk_frames, device, args.seed)
        release_free_memory()
        generator = torch.Generator().manual_seed(args.seed)
        frames = max(1, round(seconds * spec.latent_rate))
        samples = round(seconds * spec.sample_rate)
        if args.direction == "decode":
            inputs = torch.randn(1, frames, decoder.latent_dim, generator=generator).to(device)
            estimate = decoder.decode_memory(frames, chunk_frames=args.chunk_frames)
        else:
            inputs = (0.1 * torch.randn(1, samples, generator=generator)).to(device)
            estimate = decoder.encode_memory(samples, chunk_frames=args.chunk_frames)
        probe = memory_probe(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        before = probe.current()
        probe.reset_peak()
        start, cpu_start = time.perf_counter(), time.process_time()
        # on CUDA the probe's max_memory_allocated already is the allocated peak
        tracker = cpu_allocated_peak() if device.type == "cpu" else contextlib.nullcontext({})
        with tracker as allocated:
            if args.direction == "decode":
                out = decoder.decode(inputs, chunk_frames=args.chunk_frames)
            else:
                out = decoder.encode(inputs, chunk_frames=args.chunk_frames).mean
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        peak = probe.peak()
    return {
        "mode": args.mode, "direction": args.direction, "minutes": args.minutes, "latent_frames": frames,
        "chunk_frames": chunk, "device": str(device), "threads": torch.get_num_threads(), "seconds": elapsed,
        "cpu_seconds": cpu, "load_average": list(os.getloadavg()),
        "peak_growth_bytes": peak - before, "peak_allocated_bytes": allocated.get("peak", peak - before),
        "estimate_bytes": estimate, "memory": probe.describe(),
        "output_shape": list(out.shape),
    }


def spawn(args: argparse.Namespace, minutes: float) -> dict[str, Any]:
    """Run :func:`worker` for one duration in a fresh interpreter and return its record."""
    command = [sys.executable, "-m", "bench.decode_memory", "--worker", "--mode", args.mode, "--minutes",
               str(minutes), "--direction", args.direction, "--device", args.device, "--seed", str(args.seed)]
    if args.chunk_frames:
        command += ["--chunk-frames", str(args.chunk_frames)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker for {minutes} min failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(records: list[dict[str, Any]]) -> str:
    lines = [f"{'mode':>4} {'dir':>6} {'min':>5} {'frames':>7} {'chunk':>5} {'time s':>8} {'cpu s':>8} "
             f"{'RSS MiB':>8} {'alloc MiB':>9} {'estimate MiB':>12} {'alloc/est':>9}"]
    for r in records:
        ratio = r["peak_allocated_bytes"] / r["estimate_bytes"]
        lines.append(f"{r['mode']:>4} {r['direction']:>6} {r['minutes']:>5g} {r['latent_frames']:>7} "
                     f"{r['chunk_frames']:>5} {r['seconds']:>8.1f} {r['cpu_seconds']:>8.1f} "
                     f"{r['peak_growth_bytes'] / MIB:>8.0f} {r['peak_allocated_bytes'] / MIB:>9.0f} "
                     f"{r['estimate_bytes'] / MIB:>12.0f} {ratio:>9.2f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("16k", "44k"), default="44k")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0])
    parser.add_argument("--direction", choices=("decode", "encode"), default="decode")
    parser.add_argument("--chunk-frames", type=int, default=None, help="latent frames per chunk (default: the "
                        "decoder's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        args.minutes = args.minutes[0]
        print(json.dumps(worker(args)))
        return
    records = []
    for minutes in args.minutes:
        record = spawn(args, minutes)
        print(json.dumps(record), flush=True)
        records.append(record)
    print(table(records))


if __name__ == "__main__":
    main()
