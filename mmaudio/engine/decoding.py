"""The decoding stage: latents -> waveforms at the mode's sample rate, trimmed to the soundtrack's duration."""

from __future__ import annotations

import torch

from ..decoder import AudioDecoder
from ..errors import IncompatibleComponentsError
from ..modes import mode_words
from .runtime import Placed, Runtime
from .sampling import AudioLatents


def check_decoder(decoder: AudioDecoder, latents: AudioLatents) -> None:
    """Refuse latents of another mode before any compute, in words a user understands."""
    if latents.mode != decoder.mode or latents.latents.shape[-1] != decoder.latent_dim:
        raise IncompatibleComponentsError(
            f"the latents come from a {mode_words(latents.mode)} network but the decoder is "
            f"{decoder.describe()}; load the decoder files of the network's mode"
        )


def decode_audio(decoder: Placed[AudioDecoder], latents: AudioLatents, runtime: Runtime) -> torch.Tensor:
    """Float32 waveforms [B, 1, samples] on the CPU, one batch row at a time (long ones in chunks)."""
    model = decoder.module
    check_decoder(model, latents)
    batch, frames = latents.latents.shape[0], latents.latents.shape[1]
    samples = model.num_samples(latents.duration)
    runtime.plan({"decoding": batch})
    waves = []
    memory = model.decode_memory(frames, batch=1, dtype=decoder.dtype)
    with runtime.stage("decoding", [decoder], memory), torch.inference_mode():
        for row in range(batch):
            latent = latents.latents[row:row + 1].to(decoder.device)
            waves.append(model.decode(latent, num_samples=samples).float().cpu())
            runtime.progress("decoding", row + 1, batch)
    return torch.cat(waves).contiguous()
