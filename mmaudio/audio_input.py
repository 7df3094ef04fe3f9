"""Audio in: any ComfyUI AUDIO -> the network's latents, the way the reference makes its training latents.

ComfyUI hands audio over as a float waveform ``[B, channels, samples]`` (or ``[channels, samples]``) and a
sample rate. The reference's datasets average the channels to mono and resample to the mode's rate; the
extraction scripts then run the mel front-end and the VAE encoder and keep the posterior. Here:

1. :func:`prepare_audio`: checks, mono by averaging the channels, band-limited resampling with FFmpeg's
   resampler (PyAV). Both steps are linear and time-invariant, so averaging first gives the same signal as
   resampling every channel and averaging after, at a fraction of the cost and for any channel layout.
2. :func:`encode_audio`: the mel front-end and the VAE encoder (:meth:`AudioDecoder.encode`; long clips in
   chunks with bounded memory), giving the posterior in the network's (B, T, latent_dim) layout.

Latent frames for N samples at the mode's rate: mel_frames = floor((N + 2·floor((n_fft - hop)/2) - n_fft) / hop)
+ 1 and T = floor(mel_frames / 2), i.e. floor(N / (2·hop)) for both modes (n_fft = 4·hop). The network's
sequence length for a duration d (:class:`~mmaudio.model.sequence_config.SequenceLengths`) is
ceil(d·sr / (2·hop)): an encoded clip of exactly d seconds has the same number of frames when d·sr is a multiple
of 2·hop (8 s at 16 kHz: 250) and one fewer otherwise (8 s at 44.1 kHz: 344, not 345). To get exactly the
network's length, pad the waveform with zeros (or trim it) to ``latent_seq_len · 2·hop`` samples first
(:func:`fit_to_latent_frames`; that is ``SequenceLengths.num_audio_samples``, and what the reference's training
clips are: 128000 samples at 16 kHz, 353280 at 44.1 kHz); the decoder's output has that length too.
"""

from __future__ import annotations

from typing import Any

import torch

from .decoder import AudioDecoder
from .errors import InvalidInputError
from .media.audio import as_batch_layout, as_sample_rate, resample_band_limited, resampled_length
from .mel import MelConfig
from .modes import mode_named
from .vae import LatentDistribution
from .vae.chunked import ProgressCallback


# ---- lengths -------------------------------------------------------------------------------------------------
def latent_frames_for_samples(num_samples: int, mode: str) -> int:
    """Latent frames the encoder gives for ``num_samples`` samples at the mode's rate (0 when too short)."""
    spec = mode_named(mode)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise InvalidInputError(f"num_samples must be a whole number of samples, got {num_samples!r}")
    mel_frames = max(0, MelConfig.for_mode(spec.name).num_frames(num_samples))
    return mel_frames // (spec.samples_per_latent // spec.hop_length)


def samples_for_latent_frames(num_latent_frames: int, mode: str) -> int:
    """Samples at the mode's rate that encode to exactly ``num_latent_frames`` frames, and that the decoder
    makes from them: frames · 2 · hop."""
    return num_latent_frames * mode_named(mode).samples_per_latent


def fit_to_latent_frames(waveform: torch.Tensor, num_latent_frames: int, mode: str) -> torch.Tensor:
    """Mono ``[B, samples]`` at the mode's rate, zero-padded or trimmed at the end to the length that encodes to
    exactly ``num_latent_frames`` frames (e.g. the network's ``latent_seq_len``)."""
    length = samples_for_latent_frames(num_latent_frames, mode)
    if waveform.shape[-1] >= length:
        return waveform[..., :length]
    return torch.nn.functional.pad(waveform, (0, length - waveform.shape[-1]))


# ---- checks ----------------------------------------------------------------------------------------------------
def _checked_audio(waveform: Any) -> torch.Tensor:
    """``[B, channels, samples]`` float tensor with samples, channels, finite values and sound in every item."""
    waveform = as_batch_layout(waveform, "audio")
    batch, channels, samples = waveform.shape
    if batch == 0 or channels == 0 or samples == 0:
        raise InvalidInputError(
            f"audio is empty: {batch} item(s), {channels} channel(s), {samples} sample(s) {tuple(waveform.shape)}")
    if not waveform.is_floating_point():
        raise InvalidInputError(f"audio must hold float samples (-1..1), got dtype {waveform.dtype}")
    if not torch.isfinite(waveform).all():
        raise InvalidInputError("audio contains NaN or infinite samples")
    silent = [i for i in range(batch) if not waveform[i].any()]
    if silent:
        which = "audio is" if batch == 1 else f"audio item(s) {silent} of {batch} are"
        raise InvalidInputError(f"{which} silent (every sample is exactly 0): encoding silence gives nothing to "
                                "keep; give audio with sound in it")
    return waveform


# ---- audio in --------------------------------------------------------------------------------------------------
def prepare_audio(waveform: torch.Tensor, sample_rate: int, mode: str) -> torch.Tensor:
    """A ComfyUI AUDIO waveform ``[B, channels, samples]`` (or ``[channels, samples]``) at ``sample_rate`` ->
    mono float32 ``[B, samples]`` on the CPU at the sample rate of ``mode`` ("16k" or "44k").

    Channels are averaged, then resampled band-limited (FFmpeg's resampler: flat to 0.8 of the new Nyquist
    frequency, > 40 dB down from 1.1 of it); the result lasts as long as the input (ceil(N · new / old)
    samples). Raises :class:`InvalidInputError` naming ``audio`` for unusable input.
    """
    rate = as_sample_rate(sample_rate, "audio sample rate")
    target = mode_named(mode).sample_rate
    waveform = _checked_audio(waveform)
    mono = waveform.detach().to(device="cpu", dtype=torch.float32).mean(dim=1)
    if rate == target:
        return mono.contiguous()
    rows = [torch.from_numpy(resample_band_limited(row.numpy()[None], rate, target)[0]) for row in mono]
    return torch.stack(rows)


def encode_audio(decoder: AudioDecoder, waveform: torch.Tensor, sample_rate: int, *,
                 device: torch.device | str | None = None, chunk_frames: int | None = None,
                 progress: ProgressCallback | None = None) -> LatentDistribution:
    """A ComfyUI AUDIO waveform at ``sample_rate`` -> the VAE posterior over latents in the network's
    (B, T, latent_dim) layout (unnormalized, like the network's output), T = :func:`latent_frames_for_samples`
    of the resampled length. Long clips are encoded in chunks (see :meth:`AudioDecoder.encode`); ``device`` is
    where the encoder runs (default: the CPU)."""
    mono = prepare_audio(waveform, sample_rate, decoder.mode)
    spec = mode_named(decoder.mode)
    if latent_frames_for_samples(mono.shape[-1], spec.name) < 1:
        minimum = samples_for_latent_frames(1, spec.name)
        raise InvalidInputError(
            f"audio is too short to encode: {mono.shape[-1]} samples at {spec.sample_rate} Hz, fewer than one "
            f"latent frame ({minimum} samples, {1000 * minimum / spec.sample_rate:.0f} ms)")
    if device is not None:
        mono = mono.to(device)
    return decoder.encode(mono, chunk_frames=chunk_frames, progress=progress)


def encode_audio_memory(decoder: AudioDecoder, num_samples: int, sample_rate: int, batch: int = 1,
                        dtype: torch.dtype = torch.float32, chunk_frames: int | None = None) -> int:
    """Activation bytes :func:`encode_audio` needs on its device for ``num_samples`` samples at ``sample_rate``
    (see :meth:`AudioDecoder.encode_memory`); the CPU-side resampling copies are not included."""
    samples = resampled_length(num_samples, as_sample_rate(sample_rate, "audio sample rate"), decoder.sample_rate)
    return decoder.encode_memory(samples, batch=batch, dtype=dtype, chunk_frames=chunk_frames)
