"""The pack's own ComfyUI types and the objects that travel on them.

Type names carry the pack prefix ``MMAUDIO_SYNC_`` so they never meet another MMAudio pack's sockets
(kijai's MMAUDIO_MODEL, VOCODER_MODEL, MMAUDIO_FEATUREUTILS). Each object carries what the next node needs to
check a pairing before any compute: the network's variant and mode, the decoder's mode and sample rate. The
conditions and latents that travel between the compute nodes are the engine's own objects
(:class:`~..mmaudio.engine.EncodedConditions`, :class:`~..mmaudio.engine.AudioLatents`), whose tensors live on
the CPU (ComfyUI's intermediate device): a cached node output never pins GPU memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from comfy_api.latest import io

from ..mmaudio.engine import FeatureModels, Placed
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

    @property
    def placed(self) -> Placed:
        return Placed(self.network, self.placement.load_device, self.placement.compute_dtype, self.patcher)

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

    @property
    def models(self) -> FeatureModels:
        return FeatureModels(
            clip=Placed(self.clip.model.clip, self.sync_placement.load_device, self.clip_placement.compute_dtype,
                        self.clip),
            synchformer=Placed(self.synchformer.model.synchformer, self.sync_placement.load_device,
                               self.sync_placement.compute_dtype, self.synchformer))


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

    @property
    def placed(self) -> Placed:
        return Placed(self.decoder, self.placement.load_device, self.decoder.compute_dtype, self.patcher)
