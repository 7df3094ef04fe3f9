"""Command line: ``python -m mmaudio generate --video in.mp4 --prompt "rain on a tin roof" --out out.mp4``.

Runs the same library stages as the ComfyUI nodes. Without ``--video`` it is text-to-audio and writes an audio
file. Weights are looked up in ``--weights`` and, unless ``--no-download`` is given, the missing published files
of the chosen variant are fetched (checked against their published checksums) on first use.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .errors import MMAudioError
from .model.config import VARIANTS

AUDIO_SUFFIXES = {".wav": "wav", ".flac": "flac", ".mp3": "mp3", ".opus": "opus", ".ogg": "opus"}
VIDEO_SUFFIXES = {".mp4": "mp4", ".mkv": "mkv", ".webm": "webm", ".mov": "mp4"}
COMPONENT_FLAGS = ("network", "vae", "vocoder", "clip", "synchformer")


class TextProgress:
    """One self-overwriting status line per stage on stderr."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._stage = ""
        self._started = time.monotonic()

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if self.quiet:
            return
        if stage != self._stage:
            if self._stage:
                sys.stderr.write("\n")
            self._stage = stage
            self._started = time.monotonic()
        elapsed = time.monotonic() - self._started
        if total:
            width = 30
            filled = int(width * min(done, total) / total)
            bar = "#" * filled + "." * (width - filled)
            sys.stderr.write(f"\r{stage:>10} [{bar}] {done}/{total}  {elapsed:5.1f}s")
        else:
            sys.stderr.write(f"\r{stage:>10} {done}  {elapsed:5.1f}s")
        sys.stderr.flush()

    def close(self) -> None:
        if self._stage and not self.quiet:
            sys.stderr.write("\n")
            sys.stderr.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mmaudio", description="MMAudio: sound for video, or text.")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="generate audio for a video (muxed into a copy) or for a prompt")
    gen.add_argument("--video", type=Path, help="input video; omit for text-to-audio")
    gen.add_argument("--prompt", default="", help="what the audio should contain")
    gen.add_argument("--negative-prompt", default="", help="what it should not contain")
    gen.add_argument("--out", type=Path, required=True,
                     help="output: a video (.mp4/.mkv/.webm) with the new soundtrack, or an audio file "
                          "(.wav/.flac/.mp3/.opus) for text-to-audio")
    gen.add_argument("--audio-out", type=Path, help="also write the audio alone here (default: beside a video "
                                                    "output, as .flac)")
    gen.add_argument("--duration", type=float, help="seconds (default: the video's length, or 8 s for text)")
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--steps", type=int, default=25)
    gen.add_argument("--cfg", type=float, default=4.5, help="classifier-free guidance strength")
    gen.add_argument("--samples", type=int, default=1, help="samples per prompt (consecutive seeds)")
    gen.add_argument("--mask-away-clip", action="store_true", help="ignore CLIP image features (keep sync)")
    gen.add_argument("--variant", default="large_44k_v2", choices=sorted(VARIANTS),
                     help="network variant to fetch when no --network file is given")
    gen.add_argument("--weights", type=Path, help="weights folder (default: $MMAUDIO_WEIGHTS or "
                                                  "~/.cache/mmaudio-sync)")
    gen.add_argument("--no-download", action="store_true", help="never fetch missing weights")
    for kind in COMPONENT_FLAGS:
        gen.add_argument(f"--{kind}", type=Path, help=f"explicit {kind} weights file")
    gen.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    gen.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16", "fp8_e4m3fn"])
    gen.add_argument("--offload", action="store_true",
                     help="keep the models on the CPU between their stages: the GPU holds one stage's models at a "
                          "time (for small GPUs; costs the transfers)")
    gen.add_argument("--compile", default="off", choices=["off", "compile", "cuda_graphs"],
                     help="torch.compile the flow network (a minute or more on first use; cuda_graphs: also capture "
                          "CUDA graphs). Falls back to the plain network if compiling fails")
    gen.add_argument("--quiet", action="store_true")
    return parser


def _resolve_files(args: argparse.Namespace, progress: TextProgress):  # -> ComponentFiles
    from .pipeline import ComponentFiles, default_weights_folder
    from .weights import download_known_file, files_for_variant, find_known_file, missing_weights_error

    folder = args.weights or default_weights_folder()
    chosen = files_for_variant(args.variant, prefer="original")
    paths = {}
    for kind in COMPONENT_FLAGS:
        explicit = getattr(args, kind)
        if explicit is not None:
            paths[kind] = explicit
            continue
        entry = chosen[kind]
        local = find_known_file(entry, [folder])
        if local is None:
            if args.no_download:
                raise missing_weights_error(entry, folder, "--no-download was given")
            local = download_known_file(entry, folder, progress=lambda stage, done, total, name=entry.name:
                                        progress(f"{name}", done, total))
        paths[kind] = local
    return ComponentFiles(**paths)


def _check_outputs(args: argparse.Namespace) -> None:
    suffix = args.out.suffix.lower()
    if args.video is None and suffix not in AUDIO_SUFFIXES:
        raise MMAudioError(f"--out {args.out}: without --video the output is audio; use one of "
                           f"{', '.join(AUDIO_SUFFIXES)}")
    if args.video is not None and suffix not in VIDEO_SUFFIXES and suffix not in AUDIO_SUFFIXES:
        raise MMAudioError(f"--out {args.out}: expected a video ({', '.join(VIDEO_SUFFIXES)}) or audio "
                           f"({', '.join(AUDIO_SUFFIXES)}) file name")
    if args.video is not None and not args.video.is_file():
        raise MMAudioError(f"--video {args.video}: no such file")


def generate(args: argparse.Namespace) -> list[Path]:
    """Run the job; returns the files written."""
    from . import media
    from .pipeline import MMAudioPipeline

    _check_outputs(args)
    progress = TextProgress(args.quiet)
    try:
        files = _resolve_files(args, progress)
        if args.video is not None:  # probed before any weights load, so a bad file fails fast
            media.probe_video(args.video)
        pipeline = MMAudioPipeline.from_files(files, device=args.device, precision=args.precision,
                                              offload=args.offload)
        result = pipeline.generate(
            prompts=[args.prompt], negative_prompt=args.negative_prompt, video=args.video,
            duration=args.duration, seed=args.seed, steps=args.steps, cfg=args.cfg, num_samples=args.samples,
            mask_away_clip=args.mask_away_clip, progress=progress, compile=args.compile,
        )
    finally:
        progress.close()

    written: list[Path] = []
    batch = result.waveform.shape[0]

    def numbered(path: Path, index: int) -> Path:
        return path if batch == 1 else path.with_name(f"{path.stem}_{index:02d}{path.suffix}")

    out_is_video = args.out.suffix.lower() in VIDEO_SUFFIXES
    for index in range(batch):
        wave = result.waveform[index]
        if out_is_video:
            target = numbered(args.out, index)
            written.extend(media.mux_audio_into_video(args.video, wave, result.sample_rate, target))
            audio_path = numbered(args.audio_out or args.out.with_suffix(".flac"), index)
        else:
            audio_path = numbered(args.out, index)
        written.append(media.write_audio(audio_path, wave, result.sample_rate))
    return written


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        written = generate(args)
    except MMAudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    for path in written:
        print(path)
    return 0
