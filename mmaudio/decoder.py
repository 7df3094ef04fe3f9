"""The audio decoder: network latent -> mel (VAE decoder) -> waveform (BigVGAN), for one mode.

Pairs a :class:`~mmaudio.vae.VAE` with the vocoder of the same mode and checks every pairing up front: VAE with
vocoder when built, decoder with flow network (:meth:`AudioDecoder.check_compatible`) before any compute.

Latents longer than one chunk (:data:`DEFAULT_CHUNK_FRAMES` latent frames) are decoded in overlapping chunks, and
waveforms that long are encoded in chunks, so memory is bounded by the chunk, not the clip; the result equals
the whole-clip computation within float32 rounding (see :mod:`mmaudio.vae.chunked` and
:mod:`mmaudio.vocoder.chunked`). Shorter ones take the plain whole-clip path. Each direction states the memory it
needs (:meth:`AudioDecoder.decode_memory`, :meth:`AudioDecoder.encode_memory`).
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import IncompatibleComponentsError, InvalidInputError
from .mel import MelConverter
from .modes import MODES, mode_named, mode_words
from .vae import VAE, LatentDistribution
from .vae.chunked import (
    AttentionSplit,
    ProgressCallback,
    Span,
    decode_in_chunks,
    encode_in_chunks,
    largest_span,
    largest_weight_values,
    run_memory,
    split_evenly,
)
from .vocoder import BigVGAN
from .vocoder.chunked import vocode_in_chunks, vocode_memory

# Latent frames decoded at once: 11.9 s at 44.1 kHz, 16.4 s at 16 kHz. Clips up to this length (the 8-10 s the
# networks are trained for) take the plain whole-clip path; longer ones go in chunks of at most this length.
DEFAULT_CHUNK_FRAMES = 512
# The vocoder's chunk on a CPU when a long clip is decoded in chunks and no chunk length is asked for. Its
# activations for 512 latent frames overflow the CPU's caches: 256 vocoded 40% faster at 16 kHz (1.74 -> 1.06 s
# per second of audio) and 27% faster at 44.1 kHz (6.48 -> 4.72 s), full-size random weights, 2 threads; a whole
# 10-minute 16 kHz decode took 614 s instead of 689 s. Short clips (the whole-clip path) are not affected.
CPU_VOCODER_CHUNK_FRAMES = 256


class AudioDecoder(nn.Module):
    """Latent (B, T, latent_dim) -> float32 waveform (B, 1, samples) at 16000 or 44100 Hz."""

    def __init__(self, vae: VAE, vocoder: BigVGAN) -> None:
        super().__init__()
        vae_name = vae.source or "the VAE"
        vocoder_name = vocoder.source or "the vocoder"
        if vae.mode is None or vae.mode != vocoder.mode or vae.num_mels != vocoder.config.num_mels:
            vae_desc = f"{mode_words(vae.mode)} ({vae.num_mels} mel bands)"
            voc_desc = (f"{mode_words(vocoder.mode)} ({vocoder.config.num_mels} mel bands, "
                        f"{vocoder.hop_length}x)")
            raise IncompatibleComponentsError(
                f"the VAE {vae_name} is a {vae_desc} model but the vocoder {vocoder_name} is {voc_desc}; "
                f"use v1-16.pth with best_netG.pt, or v1-44.pth with the BigVGAN v2 44 kHz vocoder"
            )
        self.vae = vae
        self.vocoder = vocoder
        # Activations dtype; weights are cast to it on the fly. float32 matches the reference.
        self.compute_dtype = torch.float32
        # The VAE's own front-end, for encoding audio (non-persistent float32 buffers, ~0.5 MB).
        self.mel = MelConverter.for_mode(self.mode)
        # Latent frames decoded (and encoded) at once; longer clips go in overlapping chunks of this length.
        self.chunk_frames = DEFAULT_CHUNK_FRAMES

    @property
    def mode(self) -> str:
        return str(self.vae.mode)

    @property
    def sample_rate(self) -> int:
        return int(self.vocoder.sample_rate or MODES[self.mode].sample_rate)

    @property
    def latent_dim(self) -> int:
        return self.vae.latent_dim

    @property
    def samples_per_latent(self) -> int:
        """Waveform samples per latent frame (the VAE doubles the frame rate, the vocoder multiplies by hop)."""
        return 2 * self.vocoder.hop_length

    def describe(self) -> str:
        """E.g. "16 kHz (v1-16.pth + best_netG.pt)"."""
        spec = MODES[self.mode]
        return f"{spec.words} ({self.vae.source or spec.vae_file} + {self.vocoder.source or spec.vocoder_file})"

    def check_compatible(self, network_mode: str | int, network_name: str | None = None,
                         latent_dim: int | None = None) -> None:
        """Raise :class:`IncompatibleComponentsError` unless a network of ``network_mode`` (and ``latent_dim``,
        when given) can be decoded by this decoder. Cheap: call it before any compute."""
        spec = mode_named(network_mode)
        network = f"the network {network_name}" if network_name else "the network"
        if spec.name != self.mode:
            raise IncompatibleComponentsError(
                f"the decoder is for {self.describe()} but {network} is a {spec.words} model; "
                f"load {spec.vae_file} and {spec.vocoder_name}"
            )
        if latent_dim is not None and latent_dim != self.latent_dim:
            raise IncompatibleComponentsError(
                f"{network} makes {latent_dim}-channel latents but the decoder {self.describe()} takes "
                f"{self.latent_dim}-channel latents"
            )

    def num_samples(self, duration: float) -> int:
        """Samples of ``duration`` seconds at this sample rate (rounded to the nearest sample)."""
        if not duration > 0:
            raise InvalidInputError(f"duration must be positive seconds, got {duration!r}")
        return round(duration * self.sample_rate)

    def _checked_latent(self, latent: torch.Tensor) -> None:
        if latent.ndim != 3 or latent.shape[-1] != self.latent_dim:
            hint = ""
            if latent.ndim == 3 and latent.shape[1] == self.latent_dim:
                hint = " (it looks like (batch, channels, frames); transpose it)"
            raise InvalidInputError(
                f"latent must be (batch, frames, {self.latent_dim}) for the {mode_words(self.mode)} decoder, "
                f"got {tuple(latent.shape)}{hint}"
            )

    def _chunk(self, chunk_frames: int | None) -> int:
        chunk = self.chunk_frames if chunk_frames is None else chunk_frames
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise InvalidInputError(f"chunk_frames must be a positive number of latent frames, got {chunk!r}")
        return chunk

    def decode_mel(self, latent: torch.Tensor, *, chunk_frames: int | None = None,
                   progress: ProgressCallback | None = None) -> torch.Tensor:
        """Latent (B, T, latent_dim) -> mel (B, num_mels, 2T) in ``compute_dtype``; in chunks of ``chunk_frames``
        latent frames (default :attr:`chunk_frames`) when T is longer, reporting 2 steps per chunk."""
        self._checked_latent(latent)
        chunk = self._chunk(chunk_frames)
        # Computed where the latent is: under a memory manager's partial load some weights may still sit on the
        # offload device, and the casting layers bring them to the activations.
        z = latent.to(dtype=self.compute_dtype).transpose(1, 2)
        if latent.shape[1] <= chunk:
            mel = self.vae.decode(z)
            _report_whole(progress)
            return mel
        return decode_in_chunks(self.vae, z, chunk, progress)

    def _vocoder_chunk(self, chunk_frames: int | None, device: torch.device) -> int:
        """Latent frames per vocoder chunk: ``chunk_frames`` when given, else :attr:`chunk_frames`, capped at
        :data:`CPU_VOCODER_CHUNK_FRAMES` on a CPU."""
        chunk = self._chunk(chunk_frames)
        return min(chunk, CPU_VOCODER_CHUNK_FRAMES) if chunk_frames is None and device.type == "cpu" else chunk

    def vocode(self, mel: torch.Tensor, *, chunk_frames: int | None = None,
               progress: ProgressCallback | None = None) -> torch.Tensor:
        """Mel (B, num_mels, frames) -> float32 waveform (B, 1, frames·hop); in chunks of 2·``chunk_frames`` mel
        frames when longer (default: see :meth:`_vocoder_chunk`), reporting 1 step per chunk."""
        chunk = 2 * self._vocoder_chunk(chunk_frames, mel.device)
        mel = mel.to(self.compute_dtype)
        if mel.shape[-1] <= chunk:
            waveform = self.vocoder(mel).to(torch.float32)
            _report_whole(progress)
            return waveform
        return vocode_in_chunks(self.vocoder, mel, chunk, progress)

    def decode(self, latent: torch.Tensor, num_samples: int | None = None, duration: float | None = None, *,
               chunk_frames: int | None = None, progress: ProgressCallback | None = None) -> torch.Tensor:
        """Latent (B, T, latent_dim) -> float32 waveform (B, 1, samples) at :attr:`sample_rate`.

        Trimmed to ``num_samples`` or to ``duration`` seconds when given (the latent covers a little more than
        the requested duration); untrimmed otherwise. A latent longer than ``chunk_frames`` (default
        :attr:`chunk_frames`) is decoded in overlapping chunks of that many latent frames, equal to the
        whole-clip result within float32 rounding; ``progress(done, total)`` is called after every chunk
        (once for a short latent) and may raise to cancel.
        """
        if num_samples is not None and duration is not None:
            raise InvalidInputError("give num_samples or duration, not both")
        if duration is not None:
            num_samples = self.num_samples(duration)
        available = latent.shape[1] * self.samples_per_latent if latent.ndim == 3 else None
        if num_samples is not None and available is not None and not 0 < num_samples <= available:
            raise InvalidInputError(
                f"cannot return {num_samples} samples: a latent of {latent.shape[1]} frames decodes to "
                f"{available} samples at {self.sample_rate} Hz"
            )
        self._checked_latent(latent)
        chunk = self._chunk(chunk_frames)
        if latent.shape[1] <= chunk:
            waveform = self.vocode(self.decode_mel(latent, chunk_frames=chunk), chunk_frames=chunk)
            _report_whole(progress)
        else:
            spans = len(split_evenly(latent.shape[1], chunk))
            vocoder_spans = len(split_evenly(2 * latent.shape[1], 2 * self._vocoder_chunk(chunk_frames, latent.device)))
            total = 2 * spans + vocoder_spans  # keys/values, VAE decode, vocoder
            mel = self.decode_mel(latent, chunk_frames=chunk, progress=_shifted(progress, 0, total))
            waveform = self.vocode(mel, chunk_frames=chunk_frames, progress=_shifted(progress, 2 * spans, total))
        return waveform if num_samples is None else waveform[..., :num_samples]

    def encode(self, waveform: torch.Tensor, *, chunk_frames: int | None = None,
               progress: ProgressCallback | None = None) -> LatentDistribution:
        """Waveform (B, samples) or (B, 1, samples) at :attr:`sample_rate` -> latent posterior in the network's
        (B, T, latent_dim) layout (unnormalized, like the network's output). Needs the VAE's encoder weights.

        T = floor(mel frames / 2) (see :func:`mmaudio.audio_input.latent_frames_for_samples`). When T exceeds
        ``chunk_frames`` (default :attr:`chunk_frames`) the mel and the encoder run in chunks, equal to the
        whole-clip result within float32 rounding; ``progress(done, total)`` is called after every chunk.
        """
        device = waveform.device
        mel_converter = self.mel.to(device)
        chunk = self._chunk(chunk_frames)
        frames = mel_converter.config.num_frames(waveform.shape[-1])
        if frames // 2 <= chunk:
            mel = mel_converter(waveform)
            posterior = self.vae.encode(mel.to(self.compute_dtype)).transpose(1, 2)
            _report_whole(progress)
            return posterior
        self.vae.require_encoder()  # before any compute
        mel_spans = split_evenly(frames, 2 * chunk)
        total = len(mel_spans) + 2 * len(split_evenly(frames // 2, chunk))
        mel = self._mel_in_chunks(mel_converter, waveform, mel_spans, _shifted(progress, 0, total))
        posterior = encode_in_chunks(self.vae, mel, chunk, _shifted(progress, len(mel_spans), total))
        return posterior.transpose(1, 2)

    def decode_memory(self, num_latent_frames: int, batch: int = 1, dtype: torch.dtype = torch.float32,
                      chunk_frames: int | None = None) -> int:
        """Bytes of activations :meth:`decode` needs at its peak for a latent of ``num_latent_frames`` (weights
        not included), computing in ``dtype`` (the decoder computes in :attr:`compute_dtype`, float32, whatever
        the weights' storage dtype). The VAE stage holds keys, values and the mel while one chunk runs; the
        vocoder stage holds the mel and the waveform while one chunk runs; the larger of the two is the peak.

        It models what PyTorch allocates: a full-size 44.1 kHz decode of 1 minute allocated at most 548 MB on the
        CPU against 579 MB estimated (tests/test_decoder_chunked.py keeps smaller cases within 0.5-2x). A CPU
        process's resident memory grows by more, as the C allocator keeps freed blocks (bench/decode_memory.py).
        """
        frames = _positive_frames(num_latent_frames, "num_latent_frames")
        chunk = self._chunk(chunk_frames)
        chunked = frames > chunk
        itemsize = torch.empty((), dtype=dtype).element_size()
        split = AttentionSplit.of_decoder(self.vae.decoder)
        vae = run_memory(split, frames, chunk if chunked else None, self.vae.num_mels, batch, itemsize)
        vae += largest_weight_values(self.vae.decoder) * itemsize
        mel = batch * itemsize * self.vae.num_mels * 2 * frames
        vocoder = vocode_memory(self.vocoder, 2 * frames, 2 * chunk if chunked else None, batch, itemsize)
        return max(vae, mel + vocoder)

    def encode_memory(self, num_samples: int, batch: int = 1, dtype: torch.dtype = torch.float32,
                      chunk_frames: int | None = None) -> int:
        """Bytes of activations :meth:`encode` needs at its peak for ``num_samples`` samples (weights and the
        input waveform not included): the larger of the mel stage (one chunk's STFT, the whole mel) and the
        encoder stage (the mel, keys, values and the posterior while one chunk runs)."""
        samples = _positive_frames(num_samples, "num_samples")
        chunk = self._chunk(chunk_frames)
        mel_frames = self.mel.config.num_frames(samples)
        chunked = mel_frames // 2 > chunk
        itemsize = torch.empty((), dtype=dtype).element_size()
        mel = batch * itemsize * self.vae.num_mels * mel_frames
        stft = self.mel.config.memory(largest_span(mel_frames, 2 * chunk) if chunked else mel_frames, batch)
        if self.vae.encoder is None:
            return stft + mel
        split = AttentionSplit.of_encoder(self.vae.encoder)
        encoder = run_memory(split, mel_frames // 2, chunk if chunked else None, 2 * self.latent_dim, batch,
                             itemsize)
        encoder += largest_weight_values(self.vae.encoder) * itemsize
        return max(stft, encoder) + mel

    @torch.no_grad()
    def _mel_in_chunks(self, converter: MelConverter, waveform: torch.Tensor, spans: list[Span],
                       progress: ProgressCallback | None) -> torch.Tensor:
        """The whole mel (small: num_mels values per frame), its STFT taken span by span."""
        mel = None
        for done, span in enumerate(spans, start=1):
            part = converter.frames(waveform, span.start, span.stop).to(self.compute_dtype)
            if mel is None:
                mel = part.new_empty(*part.shape[:-1], spans[-1].stop)
            mel[..., span.start : span.stop] = part
            if progress is not None:
                progress(done, len(spans))
        assert mel is not None
        return mel


def _positive_frames(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return value


def _report_whole(progress: ProgressCallback | None) -> None:
    """The plain path is one chunk."""
    if progress is not None:
        progress(1, 1)


def _shifted(progress: ProgressCallback | None, offset: int, total: int) -> ProgressCallback | None:
    """A callback for one stage of a multi-stage job: its (done, _) becomes (offset + done, total)."""
    if progress is None:
        return None
    return lambda done, _stage_total: progress(offset + done, total)

