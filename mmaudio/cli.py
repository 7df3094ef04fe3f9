"""Command line: ``python -m mmaudio generate --video in.mp4 --prompt "rain on a tin roof" --out out.mp4``.

A thin driver of the engine (``mmaudio/engine``), like the ComfyUI nodes: same prompt syntax, duration rules,
batching, seeds, checks and messages. Everything that can be checked before a model is loaded is checked first
(outputs, inputs, options, the weights files' kinds and modes); then the models load, the engine runs, and the
outputs are written, each atomically. Without ``--video`` it is text-to-audio and writes an audio file.
Exit codes: 0 done, 2 a clear error (nothing written), 130 interrupted (nothing written).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidInputError, MMAudioError
from .model.config import VARIANTS
from .modes import MODES

COMPONENT_FLAGS = ("network", "vae", "vocoder", "clip", "synchformer")
DEFAULT_VARIANT = "large_44k_v2"
_MODE_VARIANTS = {"16k": "small_16k", "44k": "large_44k_v2"}  # whose companion files a custom network takes


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
            sys.stderr.write(f"\r{stage:>20} [{bar}] {done}/{total}  {elapsed:5.1f}s")
        else:
            sys.stderr.write(f"\r{stage:>20} {done}  {elapsed:5.1f}s")
        sys.stderr.flush()

    def note(self, text: str) -> None:
        if not self.quiet:
            self.close()
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self._stage and not self.quiet:
            sys.stderr.write("\n")
            sys.stderr.flush()
        self._stage = ""


def build_parser() -> argparse.ArgumentParser:
    from .media.outputs import AUDIO_SUFFIXES, VIDEO_SUFFIXES

    parser = argparse.ArgumentParser(prog="python -m mmaudio", description="MMAudio: sound for video, or text.")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="generate audio for a video (muxed into a copy) or for a prompt")
    gen.add_argument("--video", type=Path, help="input video; omit for text-to-audio")
    gen.add_argument("--prompt", default="", help="what the audio should contain; one prompt per line gives a "
                                                  "batch, lines starting with a time like [12] or [1:05] change "
                                                  "the prompt over time (as in the ComfyUI node)")
    gen.add_argument("--negative-prompt", default="", help="what it should not contain (one line, or one per "
                                                           "prompt line, or timed lines)")
    gen.add_argument("--out", type=Path, required=True,
                     help=f"output: a video ({', '.join(VIDEO_SUFFIXES)}) with the new soundtrack, or an audio "
                          f"file ({', '.join(AUDIO_SUFFIXES)})")
    gen.add_argument("--audio-out", type=Path, help="also write the audio alone here (default: beside a video "
                                                    "output, as .flac)")
    gen.add_argument("--duration", type=float, help="seconds (default: the video's length, or 8 s for text); "
                                                    "longer than 10 s runs in overlapping 8 s windows")
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--steps", type=int, default=25)
    gen.add_argument("--cfg", type=float, default=4.5, help="classifier-free guidance strength (below 1: none)")
    gen.add_argument("--samples", type=int, default=1, help="samples per prompt (consecutive seeds)")
    gen.add_argument("--mask-away-clip", action="store_true", help="ignore CLIP image features (keep sync)")
    gen.add_argument("--audio", type=Path, help="input audio to start from: an audio file, or a video with a "
                                                "soundtrack (the same file as --video works)")
    gen.add_argument("--denoise", type=float, default=1.0,
                     help="with --audio: how much of the way from noise to redo (1: all, 0: the input unchanged)")
    gen.add_argument("--regenerate", type=float, nargs=2, metavar=("START", "END"),
                     help="with --audio: regenerate START..END seconds and keep the rest (END 0: to the end, also "
                          "past the audio's end when the video is longer: extension)")
    gen.add_argument("--fade", type=float, default=0.1, help="seconds of soft edge inside the regenerated range")
    gen.add_argument("--variant", choices=sorted(VARIANTS),
                     help=f"network variant to fetch (default: the variant of --network, else {DEFAULT_VARIANT})")
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
    gen.add_argument("--lowvram", action="store_true",
                     help="for 4-6 GB GPUs: like --offload, and the blocks of the flow network and of CLIP stream to "
                          "the GPU one at a time while they run (transfers overlap the compute)")
    gen.add_argument("--compile", default="off", choices=["off", "compile", "cuda_graphs"],
                     help="torch.compile the flow network (a minute or more on first use; cuda_graphs: also capture "
                          "CUDA graphs). Falls back to the plain network if compiling fails")
    gen.add_argument("--quiet", action="store_true")
    return parser


@dataclass(frozen=True)
class Outputs:
    """Where each sample's files go: (video or None, audio) per batch row, and the formats."""

    videos: list[Path]
    audios: list[Path]
    container: str | None
    audio_format: str


def _plan_outputs(args: argparse.Namespace, rows: int) -> Outputs:
    """Check every output before anything loads: formats, writable folders, none of them an input, distinct."""
    from .media import outputs

    inputs = {"--video": args.video} if args.video is not None else {}
    if args.audio is not None:
        inputs["--audio"] = args.audio
    inputs.update({f"--{kind}": getattr(args, kind) for kind in COMPONENT_FLAGS if getattr(args, kind)})
    suffix = args.out.suffix.lower()
    if args.video is None and suffix not in outputs.AUDIO_SUFFIXES:
        raise InvalidInputError(f"--out {args.out}: without --video the output is audio; use one of "
                                f"{', '.join(outputs.AUDIO_SUFFIXES)}")
    if suffix in outputs.VIDEO_SUFFIXES:
        videos = outputs.numbered_paths(args.out, rows)
        audio_target = args.audio_out or args.out.with_suffix(".flac")
        container = None
        for path in videos:
            container = outputs.check_video_output(path, "--out", args.video, inputs=inputs)
        audio_option = "--audio-out" if args.audio_out else "--out (its .flac companion)"
    else:
        videos, container = [], None
        audio_target, audio_option = args.out, "--out"
        if args.audio_out is not None:
            raise InvalidInputError("--audio-out: only with a video --out (the audio is --out itself)")
    audios = outputs.numbered_paths(audio_target, rows)
    audio_format = ""
    for path in audios:
        audio_format = outputs.check_audio_output(path, audio_option, inputs=inputs)
    named = [("--out", p) for p in videos] + [(audio_option, p) for p in audios]
    outputs.check_distinct_outputs(named, inputs)
    return Outputs(videos, audios, container, audio_format)


def _network_choice(args: argparse.Namespace) -> tuple[str, str | None]:
    """The variant whose companion files to use, and the mode of an explicit --network (from its tensors)."""
    from .weights import require_kind

    if args.network is None:
        return args.variant or DEFAULT_VARIANT, None
    _check_file(args.network, "--network")
    identity = require_kind(args.network, "network")
    if identity.mode is None:
        raise InvalidInputError(f"--network {args.network}: {identity.description} makes latents no published "
                                "decoder turns into audio")
    variant = identity.variant if identity.variant in VARIANTS else _MODE_VARIANTS[identity.mode]
    if args.variant is not None and VARIANTS[args.variant].mode != identity.mode:
        raise InvalidInputError(f"--variant {args.variant} is a {VARIANTS[args.variant].mode} model but --network "
                                f"{args.network.name} is a {identity.mode} one ({identity.description}); drop "
                                "--variant or give a network of that mode")
    for kind in ("vae", "vocoder"):  # a decoder of the other mode is refused before anything loads
        path = getattr(args, kind)
        if path is not None:
            _check_file(path, f"--{kind}")
            found = require_kind(path, kind)
            if found.mode is not None and found.mode != identity.mode:
                raise InvalidInputError(f"--{kind} {path.name} is for {found.mode} audio but --network "
                                        f"{args.network.name} is a {identity.mode} model; give the {kind} of its mode")
    return args.variant or variant, identity.mode


def _check_file(path: Path, option: str) -> None:
    if not path.exists():
        raise InvalidInputError(f"{option} {path}: no such file")
    if not path.is_file():
        raise InvalidInputError(f"{option} {path}: not a file")


def _resolve_files(args: argparse.Namespace, variant: str, progress: TextProgress):  # -> ComponentFiles
    from .engine import ComponentFiles, default_weights_folder
    from .weights import download_known_file, files_for_variant, find_known_file, missing_weights_error

    folder = args.weights or default_weights_folder()
    chosen = files_for_variant(variant, prefer="original")
    paths = {}
    for kind in COMPONENT_FLAGS:
        explicit = getattr(args, kind)
        if explicit is not None:
            _check_file(explicit, f"--{kind}")
            paths[kind] = explicit
            continue
        entry = chosen[kind]
        local = find_known_file(entry, [folder])
        if local is None:
            if args.no_download:
                raise missing_weights_error(entry, folder, "--no-download was given")
            local = download_known_file(entry, folder, progress=lambda stage, done, total, name=entry.name:
                                        progress(f"download {name}", done, total))
        paths[kind] = local
    return ComponentFiles(**paths)


def _request(args: argparse.Namespace, audio: tuple | None = None):  # -> GenerationRequest
    from .engine import GenerationRequest, RegenerateRange, SamplingSettings, check_request

    if args.lowvram and args.compile != "off":
        raise InvalidInputError("--lowvram streams the network's blocks while it runs, which a compiled network "
                                "cannot follow; use one or the other")
    regenerate = None
    if args.regenerate is not None:
        start, end = args.regenerate
        regenerate = RegenerateRange(start=start, end=end or None, fade=args.fade)
    request = GenerationRequest(
        prompt=args.prompt, negative_prompt=args.negative_prompt, duration=args.duration,
        mask_away_clip=args.mask_away_clip,
        sampling=SamplingSettings(seed=args.seed, steps=args.steps, cfg=args.cfg, samples=args.samples,
                                  compile=args.compile, denoise=args.denoise),
        audio=audio, regenerate=regenerate)
    check_request(request, audio_given=args.audio is not None)
    return request


def _read_input_audio(args: argparse.Namespace, mode: str) -> tuple | None:
    """The --audio file, read and checked (mono at the mode's rate) before any model is loaded."""
    from .audio_input import prepare_audio
    from .media import read_audio

    if args.audio is None:
        return None
    _check_file(args.audio, "--audio")
    try:
        waveform, rate = read_audio(args.audio)
        mono = prepare_audio(waveform, rate, mode)
    except InvalidInputError as exc:
        raise InvalidInputError(f"--audio {args.audio}: {exc}") from exc
    return mono[:, None, :], MODES[mode].sample_rate


def generate(args: argparse.Namespace) -> list[Path]:
    """Run the job; returns the files written."""
    from . import engine, media
    from .features.streaming import VideoFile

    started = time.monotonic()
    progress = TextProgress(args.quiet)
    _request(args)  # every option the engine checks, before anything is read
    rows = engine.parse_prompts(args.prompt, args.negative_prompt).num_rows * args.samples
    if args.video is not None:
        _check_file(args.video, "--video")
    outputs = _plan_outputs(args, rows)
    source = None
    if args.video is not None:  # probed before any weights load, so a bad file fails fast
        source = engine.VisualSource.from_file(VideoFile.open(args.video))
    device = engine.pick_device(args.device)
    variant, _ = _network_choice(args)
    request = _request(args, _read_input_audio(args, VARIANTS[variant].mode))
    try:
        files = _resolve_files(args, variant, progress)
        models = engine.load_models(files, device=device, precision=args.precision,
                                    offload=args.offload or args.lowvram, progress=progress)
        runtime = engine.DirectRuntime(device, offload=args.offload, low_vram=args.lowvram, progress=progress)
        result = engine.generate(models, source, request, runtime)
    finally:
        progress.close()
    _report_duration(result, args, progress)

    written: list[Path] = []
    try:
        for index in range(result.waveform.shape[0]):
            wave = result.waveform[index]
            if outputs.videos:
                written.extend(media.mux_audio_into_video(args.video, wave, result.sample_rate,
                                                          outputs.videos[index]))
            written.append(media.write_audio(outputs.audios[index], wave, result.sample_rate,
                                             format=outputs.audio_format))
    except BaseException:
        # A later output failed (or Ctrl-C): the earlier ones of this run go too, so a run is all or nothing.
        for path in written:
            path.unlink(missing_ok=True)
        raise
    progress.note(f"done: {len(written)} file(s), {result.duration:g} s of {result.sample_rate} Hz audio, "
                  f"{time.monotonic() - started:.1f} s")
    return written


def _report_duration(result, args: argparse.Namespace, progress: TextProgress) -> None:
    conditions = result.conditions
    if args.duration and conditions.duration < args.duration - 1e-9:
        progress.note(f"duration: {args.duration:g} s asked, the video covers {conditions.duration:g} s; "
                      f"generated {conditions.duration:g} s")
    if not conditions.windows.is_single:
        progress.note(f"windows: {conditions.windows.describe()}")


class _Interrupts:
    """Notes a Ctrl-C before raising it as usual: a library interrupted half-way (PyTorch's loader, FFmpeg) can
    turn it into another exception, which is then still reported as the interrupt it was."""

    def __init__(self) -> None:
        self.seen = False
        self._previous = None

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: object) -> None:
        self.seen = True
        raise KeyboardInterrupt


class _WarningLines(logging.Handler):
    """The library's warnings (a clip shorter than its header says, ...) as one line each on stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(f"warning: {record.getMessage()}\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    library = logging.getLogger(__name__.rsplit(".", 1)[0])
    lines = _WarningLines()
    library.addHandler(lines)
    try:
        return _run(args)
    finally:
        library.removeHandler(lines)


def _run(args: argparse.Namespace) -> int:
    with _Interrupts() as interrupts:
        try:
            written = generate(args)
        except KeyboardInterrupt:
            print("interrupted: nothing was written", file=sys.stderr)
            return 130
        except MMAudioError as exc:
            if interrupts.seen:
                print("interrupted: nothing was written", file=sys.stderr)
                return 130
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except Exception:
            if interrupts.seen:
                print("interrupted: nothing was written", file=sys.stderr)
                return 130
            raise
    for path in written:
        print(path)
    return 0
