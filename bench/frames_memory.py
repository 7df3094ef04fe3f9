"""Peak extra memory of frame selection + resizing for a long full-HD ComfyUI IMAGE batch.

Default: 300 frames of 1080p at 30 fps (10 s), a 7.5 GB float32 IMAGE, as ComfyUI hands it over. The script
builds that batch, then measures the process's peak resident memory while mmaudio.features.frames picks the
8 fps / 25 fps frames and resizes them in chunks. A second full-resolution copy would add ~7.5 GB (or ~1.9 GB
as uint8); the chunked path should add only a few chunks of frames plus the small resized outputs.

    .venv/bin/python bench/frames_memory.py                 # the real size (needs ~8.5 GB RAM)
    .venv/bin/python bench/frames_memory.py --frames 60     # smaller variant

``--file`` measures a video FILE instead: it writes a synthetic mp4 (default 1080p, 30 fps, 10 s; or use
``--video PATH``) and compares the streaming path (mmaudio.features.streaming: decode a chunk, keep only the
resized frames the slots need) with decoding the whole clip into one uint8 tensor before choosing frames (~1.9 GB
for the default clip). Both must give identical frames; the script checks that.

    .venv/bin/python bench/frames_memory.py --file                  # 1080p30, 10 s
    .venv/bin/python bench/frames_memory.py --file --seconds 3      # shorter
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmaudio import media
from mmaudio.features import frames as fr
from mmaudio.features import streaming

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


def write_video(path: Path, seconds: float, fps: int, height: int, width: int) -> Path:
    """A synthetic H.264 mp4 with moving content (every frame differs), written frame by frame."""
    import av
    import numpy as np

    ys = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    xs = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(round(seconds * fps)):
            image = np.empty((height, width, 3), dtype=np.uint8)
            image[..., 0] = (xs + 4 * i) % 256
            image[..., 1] = ys
            image[..., 2] = (xs * 0.5 + ys * 0.5 + 9 * i) % 256
            x = (16 * i) % max(1, width - height // 4)
            image[height // 3:height // 3 + height // 4, x:x + height // 4] = 250
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def measure(run: Callable[[], fr.PreparedFrames]) -> tuple[fr.PreparedFrames, int, float]:
    """(result, peak RSS above the level before, seconds) of ``run()``."""
    gc.collect()
    baseline = rss_bytes()
    start = time.perf_counter()
    with PeakSampler() as sampler:
        result = run()
    return result, sampler.peak - baseline, time.perf_counter() - start


def decode_all(path: Path) -> fr.PreparedFrames:
    video = media.read_video_frames(path)
    plan = fr.plan_frames(video.frames.shape[0], times=video.timestamps)
    return fr.prepare_frames(video.frames, plan)


def file_mode(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.video) if args.video else None
        if path is None:
            path = Path(tmp) / "synthetic.mp4"
            start = time.perf_counter()
            write_video(path, args.seconds, round(args.fps), args.height, args.width)
            print(f"wrote {path.name}: {args.width}x{args.height}, {args.fps:g} fps, {args.seconds:g} s"
                  f" ({path.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - start:.1f} s")
        info = media.probe_video(path)
        frame_u8 = info.width * info.height * 3
        whole = info.frame_count * frame_u8
        file = streaming.VideoFile.open(path, chunk_size=args.chunk)
        print(f"video: {info.frame_count} frames of {info.width}x{info.height} at {float(info.fps):.3f} fps;"
              f" decoded whole as uint8: {whole / GIB:.2f} GiB; decode chunk: {file.chunk_size} frames"
              f" = {file.chunk_size * frame_u8 / 2**20:.1f} MiB")
        streaming.VideoFile.open(write_video(Path(tmp) / "warm.mp4", 1.0, 25, 64, 96)).prepare()  # warm-up

        streamed, stream_peak, stream_time = measure(file.prepare)  # first: nothing freed yet to reuse
        out_bytes = streamed.clip_u8.numel() + streamed.sync_u8.numel()
        decoded, all_peak, all_time = measure(lambda: decode_all(path))
        same = streamed.plan == decoded.plan and torch.equal(streamed.clip_u8, decoded.clip_u8) and torch.equal(
            streamed.sync_u8, decoded.sync_u8)
        print(f"resized frames kept: {out_bytes / 2**20:.1f} MiB")
        print(f"peak extra memory, streaming:  {stream_peak / 2**20:8.1f} MiB  ({stream_time:.2f} s)")
        print(f"peak extra memory, decode-all: {all_peak / 2**20:8.1f} MiB  ({all_time:.2f} s)")
        print(f"streaming uses {stream_peak / max(all_peak, 1) * 100:.1f}% of decode-all's peak;"
              f" identical frames and plan: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--chunk", type=int, default=None,
                        help="source frames quantized/resized (or, with --file, decoded) at a time (default: as"
                             " many as fit in 128 MiB as float, or 64 MiB as decoded uint8)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--file", action="store_true", help="measure a video file: streaming vs decode-all")
    parser.add_argument("--seconds", type=float, default=10.0, help="--file: length of the synthetic clip")
    parser.add_argument("--video", help="--file: measure this file instead of a synthetic one")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.file:
        file_mode(args)
        return

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
