"""Audio for files: checking waveforms, resampling with PyAV, encoding, and writing audio-only files.

Waveforms arrive as ComfyUI's AUDIO layout, float ``[B, C, T]`` (or ``[C, T]``) in -1..1. Encoders are picked
from what PyAV's bundled FFmpeg actually has, and sample rates an encoder cannot take (44.1 kHz for Opus) are
converted with ``av.AudioResampler`` rather than refused; Opus is always written at 48 kHz.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from ..errors import InvalidInputError
from .staging import staged_files

# Codec choice -> FFmpeg encoder names, best first.
AUDIO_ENCODERS: dict[str, tuple[str, ...]] = {
    "aac": ("aac",),
    "flac": ("flac",),
    "opus": ("libopus", "opus"),
    "mp3": ("libmp3lame", "mp3"),
    "pcm_s16le": ("pcm_s16le",),
}
# Lossy codecs get a bit rate that is transparent for generated audio; None leaves the encoder's choice.
_BIT_RATES: dict[str, int] = {"aac": 192_000, "opus": 128_000, "mp3": 192_000}
# Opus always runs at 48 kHz inside and every decoder outputs 48 kHz; writing another input rate into mp4/webm
# headers only invites player quirks, so Opus tracks are always written at 48 kHz.
_FIXED_RATES: dict[str, int] = {"opus": 48000}
# FFmpeg's own Opus encoder is marked experimental and refuses to open without this.
_ENCODER_OPTIONS: dict[str, dict[str, str]] = {"opus": {"strict": "experimental"}}

# write_audio formats: extension -> (muxer, codec choice). ".ogg" is Opus in Ogg, as ".opus": every PyAV build
# has an Opus encoder (libopus, or FFmpeg's own), while its only Vorbis encoder is FFmpeg's experimental one.
AUDIO_FILE_FORMATS: dict[str, tuple[str, str]] = {
    "wav": ("wav", "pcm_s16le"),
    "flac": ("flac", "flac"),
    "mp3": ("mp3", "mp3"),
    "opus": ("ogg", "opus"),
    "ogg": ("ogg", "opus"),
}

_CHUNK_SAMPLES = 1 << 16  # frames handed to an encoder at once; bounds the float copies made per frame


def has_encoder(name: str) -> bool:
    try:
        av.Codec(name, "w")
    except (ValueError, av.FFmpegError):
        return False
    return True


def find_encoder(choice: str) -> str:
    """The first FFmpeg encoder PyAV has for a codec choice ("aac", "opus", ...)."""
    if choice not in AUDIO_ENCODERS:
        raise InvalidInputError(f"unknown audio codec {choice!r}; expected one of {sorted(AUDIO_ENCODERS)}")
    for name in AUDIO_ENCODERS[choice]:
        if has_encoder(name):
            return name
    raise InvalidInputError(f"this PyAV build has no {choice} encoder (tried {', '.join(AUDIO_ENCODERS[choice])})")


def as_sample_rate(sample_rate: Any, what: str = "sample_rate") -> int:
    """A sample rate as an int: a finite, whole, positive number (an int or float of any kind, not a bool or a
    string), or a clear error naming ``what``."""
    valid = not isinstance(sample_rate, bool) and isinstance(sample_rate, (int, float, np.integer, np.floating))
    value = float(sample_rate) if valid else 0.0
    if not (valid and math.isfinite(value) and value.is_integer() and value > 0):
        raise InvalidInputError(f"{what} must be a positive whole number of Hz, got {sample_rate!r}")
    return int(value)


def as_batch_layout(waveform: Any, what: str) -> torch.Tensor:
    """``waveform`` as a ``[batch, channels, samples]`` tensor (``[channels, samples]`` gains a batch of one), or
    a clear error naming ``what``. Only the layout: each caller checks the values it needs."""
    if not isinstance(waveform, torch.Tensor):
        raise InvalidInputError(f"{what} must be a waveform tensor, got {type(waveform).__name__}")
    if waveform.ndim == 2:
        waveform = waveform.unsqueeze(0)
    if waveform.ndim != 3:
        raise InvalidInputError(
            f"{what} must be shaped [batch, channels, samples] or [channels, samples], got {tuple(waveform.shape)}")
    return waveform


def as_waveform_batch(waveform: Any, what: str = "waveform") -> torch.Tensor:
    """A float32 CPU tensor [B, C, T] with C in (1, 2), T > 0 and finite values, from [C, T] or [B, C, T]."""
    if isinstance(waveform, np.ndarray):
        waveform = torch.from_numpy(waveform)
    waveform = as_batch_layout(waveform, what)
    batch, channels, samples = waveform.shape
    if batch == 0:
        raise InvalidInputError(f"{what} holds an empty batch")
    if channels not in (1, 2):
        raise InvalidInputError(f"{what} has {channels} channels; only mono (1) or stereo (2) audio can be written")
    if samples == 0:
        raise InvalidInputError(f"{what} has no samples")
    if waveform.dtype in (torch.int16, torch.int32):  # integer PCM, as some decoders hand it over
        scale = float(2 ** (torch.iinfo(waveform.dtype).bits - 1))
        waveform = waveform.to(torch.float32) / scale
    elif not waveform.is_floating_point():
        raise InvalidInputError(f"{what} must hold float samples in -1..1, got dtype {waveform.dtype}")
    waveform = waveform.detach().to(device="cpu", dtype=torch.float32).contiguous()
    if not torch.isfinite(waveform).all():
        raise InvalidInputError(f"{what} contains NaN or infinite samples")
    return waveform


def _layout(channels: int) -> str:
    return "mono" if channels == 1 else "stereo"


def encoder_rate(encoder: str, sample_rate: int) -> int:
    """``sample_rate`` if the encoder takes it, else the smallest supported rate above it (or the largest)."""
    rates = av.Codec(encoder, "w").audio_rates
    if not rates or sample_rate in rates:
        return sample_rate
    higher = [r for r in rates if r >= sample_rate]
    return min(higher) if higher else max(rates)


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Planar float32 [C, T] from ``rate_in`` to ``rate_out`` Hz with FFmpeg's resampler."""
    if rate_in == rate_out:
        return samples
    layout = _layout(samples.shape[0])
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.float32), format="fltp", layout=layout)
    frame.sample_rate = rate_in
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate_out)
    frames = [*resampler.resample(frame), *resampler.resample(None)]
    if not frames:
        return np.zeros((samples.shape[0], 0), dtype=np.float32)
    return np.concatenate([f.to_ndarray() for f in frames], axis=1).astype(np.float32, copy=False)


def resampled_length(num_samples: int, rate_in: int, rate_out: int) -> int:
    """Samples at ``rate_out`` that cover ``num_samples`` samples at ``rate_in``: ceil(N · out / in), so the
    result lasts as long as the input (to within one output sample)."""
    return -(-num_samples * rate_out // rate_in)


def resample_band_limited(samples: np.ndarray, rate_in: int, rate_out: int, block: int = 1 << 18) -> np.ndarray:
    """Planar float32 [C, T] (C = 1 or 2) at ``rate_out`` with FFmpeg's band-limited resampler, exactly
    :func:`resampled_length` samples long and time-aligned (output sample k is at k / rate_out seconds).

    Unlike :func:`resample`, the signal is taken to be silent after its end (zeros are fed before the flush),
    so the tail and very short inputs come out whole. The input is fed in blocks of ``block`` samples: the
    resampler keeps its state between them, so blocks only bound the copies made, not the result.
    """
    if rate_in == rate_out:
        return samples
    channels, length = samples.shape
    layout = _layout(channels)
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate_out)
    # Silence after the end: a few filter lengths of the slower side (the default filter has 32 taps there).
    tail = np.zeros((channels, 64 * -(-rate_in // rate_out) + 64), dtype=np.float32)
    pieces = [samples[:, i : i + block] for i in range(0, length, block)] + [tail]
    frames: list[av.AudioFrame] = []
    for piece in pieces:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece, dtype=np.float32), format="fltp",
                                           layout=layout)
        frame.sample_rate = rate_in
        frames.extend(resampler.resample(frame))
    frames.extend(resampler.resample(None))
    out = np.concatenate([f.to_ndarray() for f in frames], axis=1) if frames else np.zeros((channels, 0))
    return fit_length(out.astype(np.float32, copy=False), resampled_length(length, rate_in, rate_out))


def fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Trim or zero-pad [C, T] to exactly ``length`` samples."""
    if samples.shape[1] >= length:
        return samples[:, :length]
    return np.pad(samples, ((0, 0), (0, length - samples.shape[1])))


@dataclass
class AudioTrack:
    """An output audio stream and the rate its samples must have."""

    stream: av.AudioStream
    rate: int
    channels: int


def add_audio_track(
    container: av.container.OutputContainer, choice: str, sample_rate: int, channels: int
) -> AudioTrack:
    encoder = find_encoder(choice)
    rate = _FIXED_RATES.get(choice) or encoder_rate(encoder, sample_rate)
    stream = container.add_stream(encoder, rate=rate)
    stream.codec_context.layout = _layout(channels)
    if choice in _BIT_RATES:
        stream.codec_context.bit_rate = _BIT_RATES[choice]
    if encoder in _ENCODER_OPTIONS:
        stream.codec_context.options = dict(_ENCODER_OPTIONS[encoder])
    return AudioTrack(stream, rate, channels)


def prepare_samples(waveform: torch.Tensor, sample_rate: int, track: AudioTrack, length: int | None) -> np.ndarray:
    """[C, T] at ``sample_rate`` -> clipped float32 [C, length] at the track's rate."""
    samples = np.clip(waveform.numpy(), -1.0, 1.0)
    samples = resample(samples, sample_rate, track.rate)
    return samples if length is None else fit_length(samples, length)


def encode_samples(track: AudioTrack, samples: np.ndarray, start_pts: int = 0) -> list[av.Packet]:
    """Encode [C, T] samples (at the track's rate) whose first sample plays at ``start_pts / rate`` seconds."""
    packets: list[av.Packet] = []
    layout = _layout(track.channels)
    time_base = Fraction(1, track.rate)
    for offset in range(0, samples.shape[1], _CHUNK_SAMPLES):
        block = np.ascontiguousarray(samples[:, offset : offset + _CHUNK_SAMPLES], dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
        frame.sample_rate = track.rate
        frame.time_base = time_base
        frame.pts = start_pts + offset
        packets.extend(track.stream.encode(frame))
    packets.extend(track.stream.encode(None))
    return packets


def _audio_format(path: Path, format: str | None) -> str:
    """The AUDIO_FILE_FORMATS key for ``path``: ``format`` when given, else its extension."""
    name = (format or path.suffix.lstrip(".")).lower()
    if name in AUDIO_FILE_FORMATS:
        return name
    if format:
        raise InvalidInputError(f"unknown audio format {format!r}; expected one of {sorted(AUDIO_FILE_FORMATS)}")
    extensions = ", ".join(f".{key}" for key in AUDIO_FILE_FORMATS)
    raise InvalidInputError(
        f"'{path}' does not end in an audio file extension that can be written; use one of {extensions}"
    )


def write_audio(
    path: str | os.PathLike[str], waveform: torch.Tensor | np.ndarray, sample_rate: int, format: str | None = None
) -> Path:
    """Write one waveform ([C, T] or [1, C, T], float in -1..1) as wav (16-bit), flac, mp3 or Opus in Ogg
    (".opus" or ".ogg").

    ``format`` defaults to the file extension. Opus is always written at 48 kHz (resampled when needed).
    The file appears only when complete, with the permissions of a new file; an existing file of that name is
    replaced only then.
    """
    path = Path(path)
    name = _audio_format(path, format)
    batch = as_waveform_batch(waveform)
    if batch.shape[0] != 1:
        raise InvalidInputError(f"write_audio writes one waveform, got a batch of {batch.shape[0]}; index it first")
    rate = as_sample_rate(sample_rate)
    muxer, choice = AUDIO_FILE_FORMATS[name]
    with staged_files() as staged:
        temp = staged.stage(path)
        try:
            with av.open(str(temp), mode="w", format=muxer) as container:
                track = add_audio_track(container, choice, rate, batch.shape[1])
                for packet in encode_samples(track, prepare_samples(batch[0], rate, track, None)):
                    container.mux(packet)
        except av.FFmpegError as exc:
            raise InvalidInputError(f"could not write {name} audio to '{path}': {exc}") from exc
    return path
