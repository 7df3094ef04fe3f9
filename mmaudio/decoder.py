"""The audio decoder: network latent -> mel (VAE decoder) -> waveform (BigVGAN), for one mode.

Pairs a :class:`~mmaudio.vae.VAE` with the vocoder of the same mode and checks every pairing up front: VAE with
vocoder when built, decoder with flow network (:meth:`AudioDecoder.check_compatible`) before any compute.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .errors import IncompatibleComponentsError, InvalidInputError
from .mel import MelConverter
from .modes import MODES, mode_named, mode_words
from .vae import VAE, LatentDistribution, load_vae
from .vocoder import BigVGAN, load_vocoder


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

    @classmethod
    def from_state_dicts(
        cls,
        vae_state_dict: Mapping[str, Any],
        vocoder_state_dict: Mapping[str, Any],
        vae_source: str | None = None,
        vocoder_source: str | None = None,
        ops: Any | None = None,
        vocoder_config: Mapping[str, Any] | None = None,
    ) -> AudioDecoder:
        """Load both checkpoints (see :func:`load_vae`, :func:`load_vocoder`) and pair them."""
        vae = load_vae(vae_state_dict, source=vae_source or "the VAE checkpoint", ops=ops)
        vocoder = load_vocoder(vocoder_state_dict, source=vocoder_source or "the vocoder checkpoint", ops=ops,
                               config=vocoder_config)
        return cls(vae, vocoder)

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

    def decode_mel(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent (B, T, latent_dim) -> mel (B, num_mels, 2T) in ``compute_dtype``."""
        if latent.ndim != 3 or latent.shape[-1] != self.latent_dim:
            hint = ""
            if latent.ndim == 3 and latent.shape[1] == self.latent_dim:
                hint = " (it looks like (batch, channels, frames); transpose it)"
            raise InvalidInputError(
                f"latent must be (batch, frames, {self.latent_dim}) for the {mode_words(self.mode)} decoder, "
                f"got {tuple(latent.shape)}{hint}"
            )
        # Computed where the latent is: under a memory manager's partial load some weights may still sit on the
        # offload device, and the casting layers bring them to the activations.
        z = latent.to(dtype=self.compute_dtype).transpose(1, 2)
        return self.vae.decode(z)

    def vocode(self, mel: torch.Tensor) -> torch.Tensor:
        """Mel (B, num_mels, frames) -> float32 waveform (B, 1, frames·hop)."""
        return self.vocoder(mel.to(self.compute_dtype)).to(torch.float32)

    def decode(self, latent: torch.Tensor, num_samples: int | None = None,
               duration: float | None = None) -> torch.Tensor:
        """Latent (B, T, latent_dim) -> float32 waveform (B, 1, samples) at :attr:`sample_rate`.

        Trimmed to ``num_samples`` or to ``duration`` seconds when given (the latent covers a little more than
        the requested duration); untrimmed otherwise.
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
        waveform = self.vocode(self.decode_mel(latent))
        return waveform if num_samples is None else waveform[..., :num_samples]

    def encode(self, waveform: torch.Tensor) -> LatentDistribution:
        """Waveform (B, samples) or (B, 1, samples) at :attr:`sample_rate` -> latent posterior in the network's
        (B, T, latent_dim) layout (unnormalized, like the network's output). Needs the VAE's encoder weights."""
        device = waveform.device
        mel = self.mel.to(device)(waveform)
        return self.vae.encode(mel.to(self.compute_dtype)).transpose(1, 2)
