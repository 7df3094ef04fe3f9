"""Peak extra memory of frame selection + resizing for a long full-HD ComfyUI IMAGE batch.

Default: 300 frames of 1080p at 30 fps (10 s), a 7.5 GB float32 IMAGE, as ComfyUI hands it over. The script
builds that batch, then measures the process's peak resident memory while mmaudio.features.frames picks the
8 fps / 25 fps frames and resizes them in chunks. A second full-resolution copy would add ~7.5 GB (or ~1.9 GB
as uint8); the chunked path should add only a few chunks of frames plus the small resized outputs.

    .venv/bin/python bench/frames_memory.py                 # the real size (needs ~8.5 GB RAM)
    .venv/bin/python bench/frames_memory.py --frames 60     # smaller variant
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmaudio.features import frames as fr

GIB = 1024**3


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class PeakSampler:
    """Samples RSS every few ms in a thread (torch allocations are invisible to tracemalloc)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.peak, self._stop = interval, rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def make_clip(frames: int, height: int, width: int) -> torch.Tensor:
    """A float32 IMAGE batch with moving content, filled frame by frame (no temporary full-size copy)."""
    clip = torch.empty((frames, height, width, 3), dtype=torch.float32)
    ys = torch.linspace(0, 1, height).view(height, 1)
    xs = torch.linspace(0, 1, width).view(1, width)
    for i in range(frames):
        phase = i / max(frames - 1, 1)
        clip[i, :, :, 0] = (xs + phase) % 1.0
        clip[i, :, :, 1] = ys
        clip[i, :, :, 2] = ((xs * 7 + ys * 5 + phase * 3) % 1.0)
    return clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--chunk", type=int, default=None,
                        help="source frames quantized/resized at a time (default: as many as fit in 128 MiB)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    clip = make_clip(args.frames, args.height, args.width)
    input_bytes = clip.numel() * clip.element_size()
    fr.select_and_prepare(make_clip(20, 64, 64), 25.0)  # warm up kernels and allocator outside the measurement
    baseline = rss_bytes()

    start = time.perf_counter()
    with PeakSampler() as sampler:
        prepared = fr.select_and_prepare(clip, args.fps, chunk_size=args.chunk)
    elapsed = time.perf_counter() - start

    out_bytes = prepared.clip_u8.numel() + prepared.sync_u8.numel()
    frame_f32 = args.height * args.width * 3 * 4
    extra = sampler.peak - baseline
    print(f"input IMAGE: {args.frames} x {args.height}x{args.width} float32 = {input_bytes / GIB:.2f} GiB"
          f" at {args.fps:g} fps ({args.frames / args.fps:.2f} s)")
    print(f"selected: {len(prepared.plan.clip_indices)} CLIP + {len(prepared.plan.sync_indices)} Synchformer slots"
          f" from {len(prepared.plan.source_indices)} distinct source frames; duration {prepared.duration:.3f} s")
    chunk = args.chunk or fr.auto_chunk_size(args.height, args.width, 3)
    print(f"outputs (uint8, kept): {out_bytes / 2**20:.1f} MiB; chunk of {chunk} float frames:"
          f" {chunk * frame_f32 / 2**20:.1f} MiB")
    print(f"peak extra memory (RSS peak - RSS before): {extra / 2**20:.1f} MiB"
          f" = {extra / input_bytes * 100:.2f}% of the input")
    print(f"time: {elapsed:.2f} s")


if __name__ == "__main__":
    main()
