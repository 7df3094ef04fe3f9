"""The pack's own ComfyUI types and the objects that travel on them.

Type names carry the pack prefix ``MMAUDIO_SYNC_`` so they never meet another MMAudio pack's sockets
(kijai's MMAUDIO_MODEL, VOCODER_MODEL, MMAUDIO_FEATUREUTILS). Each object carries what the next node needs to
check a pairing before any compute: the network's variant and mode, the conditions' duration and sequence
lengths, the decoder's mode and sample rate. Tensors inside conditions and latents live on the CPU
(ComfyUI's intermediate device): a cached node output never pins GPU memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from comfy_api.latest import io

from ..mmaudio.modes import mode_words
from .memory import Placement

NetworkType = io.Custom("MMAUDIO_SYNC_NETWORK")
FeatureModelsType = io.Custom("MMAUDIO_SYNC_FEATURE_MODELS")
DecoderType = io.Custom("MMAUDIO_SYNC_DECODER")
ConditionsType = io.Custom("MMAUDIO_SYNC_CONDITIONS")
LatentType = io.Custom("MMAUDIO_SYNC_LATENT")


@dataclass(frozen=True)
class NetworkHandle:
    """A loaded flow network under the memory manager. ``mode`` pairs it with a decoder."""

    patcher: Any  # comfy.model_patcher.ModelPatcher over ModelRoot(network=MMAudioNetwork)
    variant: str  # "large_44k_v2", ..., or "custom"
    mode: str  # "16k" or "44k"
    latent_dim: int
    placement: Placement
    file_name: str
    compile: str = "off"  # "off", "compile" or "cuda_graphs": set by MMAudio Compile Network

    @property
    def network(self) -> Any:
        return self.patcher.model.network

    def describe(self) -> str:
        return f"{self.variant} ({mode_words(self.mode)}, {self.file_name})"


@dataclass(frozen=True)
class FeatureModelsHandle:
    """CLIP (image and text features) and Synchformer (sync features), each under the memory manager."""

    clip: Any  # ModelPatcher over ModelRoot(clip=ClipEncoder)
    synchformer: Any  # ModelPatcher over ModelRoot(synchformer=SynchformerVisual)
    clip_placement: Placement
    sync_placement: Placement
    clip_file: str
    synchformer_file: str


@dataclass(frozen=True)
class DecoderHandle:
    """VAE decoder + vocoder of one mode under the memory manager."""

    patcher: Any  # ModelPatcher over ModelRoot(decoder=AudioDecoder)
    mode: str
    sample_rate: int
    latent_dim: int
    placement: Placement
    description: str

    @property
    def decoder(self) -> Any:
        return self.patcher.model.decoder


@dataclass(frozen=True, eq=False)
class AudioConditions:
    """Features for one generation, made for one duration (CPU tensors, float32).

    ``clip_features``/``sync_features`` are [1, clip_seq_len, D] / [1, sync_seq_len, D], or None where the
    network's learned "empty" features stand in (text-to-audio, mask_away_clip, a still image for sync).
    ``text_features`` holds one row per prompt; ``negative_text_features`` one row, or one per prompt.
    """

    duration: float
    clip_seq_len: int
    sync_seq_len: int
    clip_features: torch.Tensor | None
    sync_features: torch.Tensor | None
    text_features: torch.Tensor
    negative_text_features: torch.Tensor | None
    prompts: tuple[str, ...]
    negative_prompts: tuple[str, ...]
    source: str  # "video", "image", "text" (what the visual features came from)

    @property
    def num_prompts(self) -> int:
        return int(self.text_features.shape[0])


@dataclass(frozen=True, eq=False)
class AudioLatents:
    """Sampled VAE latents [B, latent_seq_len, latent_dim] (CPU, float32), ready for a decoder of ``mode``."""

    latents: torch.Tensor
    mode: str
    duration: float
    sample_rate: int
    seeds: tuple[int, ...]
    prompts: tuple[str, ...]  # the prompt of every batch row
