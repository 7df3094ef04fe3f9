"""The decoding stage: latents -> waveforms at the mode's sample rate, trimmed to the soundtrack's duration."""

from __future__ import annotations

import torch

from ..decoder import AudioDecoder
from ..errors import IncompatibleComponentsError
from ..modes import mode_words
from .latents import AudioLatents
from .runtime import Placed, Runtime


def check_decoder(decoder: AudioDecoder, latents: AudioLatents) -> None:
    """Refuse latents of another mode before any compute, in words a user understands."""
    if latents.mode != decoder.mode or latents.latents.shape[-1] != decoder.latent_dim:
        raise IncompatibleComponentsError(
            f"the latents come from a {mode_words(latents.mode)} network but the decoder is "
            f"{decoder.describe()}; load the decoder files of the network's mode"
        )


def decode_audio(decoder: Placed[AudioDecoder], latents: AudioLatents, runtime: Runtime) -> torch.Tensor:
    """Float32 waveforms [B, 1, samples] on the CPU, one batch row at a time (long ones in chunks).

    Latents regenerated from input audio (``latents.mask``) are spliced at the audio rate: where a frame was kept,
    the waveform is the input latents' own decoding, exactly, so the decoder's one global attention layer cannot
    let the new part colour the kept audio; the mask's soft edges cross-fade the two.
    """
    model = decoder.module
    check_decoder(model, latents)
    batch, frames = latents.latents.shape[0], latents.latents.shape[1]
    samples = model.num_samples(latents.duration)
    splice = latents.mask is not None and latents.original is not None
    runtime.plan({"decoding": batch * (2 if splice else 1)})
    waves = []
    memory = model.decode_memory(frames, batch=1, dtype=decoder.dtype)
    done = 0
    with runtime.stage("decoding", [decoder], memory), torch.inference_mode():
        originals: dict[int, torch.Tensor] = {}
        for row in range(batch):
            wave = _decode_row(model, latents.latents[row:row + 1], decoder.device, samples)
            done += 1
            runtime.progress("decoding", done, batch * (2 if splice else 1))
            if splice:
                source_row = row if latents.original.shape[0] > 1 else 0
                if source_row not in originals:
                    originals[source_row] = _decode_row(model, latents.original[source_row:source_row + 1],
                                                        decoder.device, samples)
                done += 1
                runtime.progress("decoding", done, batch * 2)
                wave = _splice(wave, originals[source_row], latents.mask, model.samples_per_latent)
            waves.append(wave)
    return torch.cat(waves).contiguous()


def _decode_row(model: AudioDecoder, latent: torch.Tensor, device: torch.device, samples: int) -> torch.Tensor:
    """One row's waveform [1, 1, samples]; latents shorter than that (an input before its extension) are decoded
    at their own length and followed by silence."""
    available = latent.shape[1] * model.samples_per_latent
    wave = model.decode(latent.to(device), num_samples=min(samples, available)).float().cpu()
    if wave.shape[-1] < samples:
        wave = torch.nn.functional.pad(wave, (0, samples - wave.shape[-1]))
    return wave


def _splice(new: torch.Tensor, kept: torch.Tensor, mask: torch.Tensor, per_frame: int) -> torch.Tensor:
    """``kept`` where the mask is 0, ``new`` where it is 1, cross-faded by the mask in between."""
    weight = mask.repeat_interleave(per_frame)[: new.shape[-1]]
    if weight.numel() < new.shape[-1]:
        weight = torch.nn.functional.pad(weight, (0, new.shape[-1] - weight.numel()), value=1.0)
    weight = weight.to(new)
    return torch.where(weight == 0, kept, weight * new + (1 - weight) * kept)
