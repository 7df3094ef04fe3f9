"""Loader nodes: flow network, feature models (CLIP + Synchformer), decoder (VAE + vocoder).

Each dropdown lists only the files of ``models/mmaudio`` (and folders added for ``mmaudio`` in
extra_model_paths.yaml) that hold the right component, recognised by their tensors, never by name. Loading
builds the model on the CPU and hands it to ComfyUI's memory manager; nothing touches the GPU here.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..mmaudio.weights import PRECISIONS
from . import adapters
from .memory import PRECISION_TOOLTIP
from .types import DecoderType, FeatureModelsType, NetworkType

CATEGORY = "audio/MMAudio"
_FOLDER_HINT = "Files of ComfyUI/models/mmaudio (or an mmaudio: path of extra_model_paths.yaml)"
_EMPTY_HINT = (" Empty list? Queue the 'MMAudio Download Weights' node to fetch the published files, then refresh "
               "the page (R).")


def _precision_input() -> io.Combo.Input:
    return io.Combo.Input("precision", options=list(PRECISIONS), default="auto", tooltip=PRECISION_TOOLTIP)


class MMAudioSyncNetworkLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MMAudioSyncNetworkLoader",
            display_name="MMAudio Network Loader",
            category=CATEGORY,
            description=(
                "Loads an MMAudio flow network: small_16k, small_44k, medium_44k, large_44k or large_44k_v2, as "
                "the original .pth or a safetensors conversion. The file is recognised by its contents; its mode "
                "(16 kHz or 44.1 kHz) travels with it so the sampler and decoder can check their partners. No files "
                "yet? The 'MMAudio Download Weights' node fetches them."
            ),
            inputs=[
                io.Combo.Input("network", options=adapters.files_of_kind("network"),
                               tooltip=f"{_FOLDER_HINT} that hold an MMAudio flow network, e.g. "
                                       "mmaudio_large_44k_v2.pth or mmaudio_large_44k_v2_fp16.safetensors."
                                       + _EMPTY_HINT),
                _precision_input(),
            ],
            outputs=[NetworkType.Output(display_name="network",
                                        tooltip="The flow network, managed by ComfyUI's model memory.")],
        )

    @classmethod
    def fingerprint_inputs(cls, network: str, precision: str) -> tuple:
        return adapters.file_fingerprint(network), precision

    @classmethod
    def execute(cls, network: str, precision: str) -> io.NodeOutput:
        return io.NodeOutput(adapters.load_network(network, precision))


class MMAudioSyncFeatureModelsLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MMAudioSyncFeatureModelsLoader",
            display_name="MMAudio Feature Models Loader",
            category=CATEGORY,
            description=(
                "Loads the two models that turn video and text into conditions: CLIP (DFN5B ViT-H/14 384, for "
                "what is seen and for the prompts) and Synchformer (for timing). The same pair serves every "
                "MMAudio network. No files yet? The 'MMAudio Download Weights' node fetches them."
            ),
            inputs=[
                io.Combo.Input("clip", options=adapters.files_of_kind("clip"),
                               tooltip=f"{_FOLDER_HINT} that hold the DFN5B CLIP ViT-H/14 384 model, e.g. "
                                       "apple_DFN5B-CLIP-ViT-H-14-384_fp16.safetensors." + _EMPTY_HINT),
                io.Combo.Input("synchformer", options=adapters.files_of_kind("synchformer"),
                               tooltip=f"{_FOLDER_HINT} that hold Synchformer, e.g. synchformer_state_dict.pth or "
                                       "mmaudio_synchformer_fp16.safetensors." + _EMPTY_HINT),
                _precision_input(),
            ],
            outputs=[FeatureModelsType.Output(display_name="feature_models",
                                              tooltip="CLIP and Synchformer, managed by ComfyUI's model memory.")],
        )

    @classmethod
    def fingerprint_inputs(cls, clip: str, synchformer: str, precision: str) -> tuple:
        return adapters.file_fingerprint(clip, synchformer), precision

    @classmethod
    def execute(cls, clip: str, synchformer: str, precision: str) -> io.NodeOutput:
        return io.NodeOutput(adapters.load_feature_models(clip, synchformer, precision))


class MMAudioSyncDecoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MMAudioSyncDecoderLoader",
            display_name="MMAudio Decoder Loader",
            category=CATEGORY,
            description=(
                "Loads the audio decoder of one mode: the MMAudio VAE and its BigVGAN vocoder. 16 kHz: v1-16.pth "
                "with best_netG.pt. 44.1 kHz: v1-44.pth with the BigVGAN v2 44 kHz 128-band generator. No files "
                "yet? The 'MMAudio Download Weights' node fetches them."
            ),
            inputs=[
                io.Combo.Input("vae", options=adapters.files_of_kind("vae"),
                               tooltip=f"{_FOLDER_HINT} that hold an MMAudio VAE: v1-16.pth (16 kHz) or v1-44.pth / "
                                       "mmaudio_vae_44k_fp16.safetensors (44.1 kHz)." + _EMPTY_HINT),
                io.Combo.Input("vocoder", options=adapters.files_of_kind("vocoder"),
                               tooltip=f"{_FOLDER_HINT} that hold a BigVGAN vocoder of the VAE's mode: best_netG.pt "
                                       "(16 kHz) or bigvgan_generator.pt of bigvgan_v2_44khz_128band_512x "
                                       "(44.1 kHz)." + _EMPTY_HINT),
                io.Combo.Input("precision", options=list(PRECISIONS), default="auto",
                               tooltip="Storage precision of the decoder weights; it always computes in fp32. "
                                       "auto keeps fp32 weights (the decoder is small and its output is the "
                                       "audio itself)."),
            ],
            outputs=[DecoderType.Output(display_name="decoder",
                                        tooltip="VAE + vocoder of one mode, managed by ComfyUI's model memory.")],
        )

    @classmethod
    def fingerprint_inputs(cls, vae: str, vocoder: str, precision: str) -> tuple:
        return adapters.file_fingerprint(vae, vocoder), precision

    @classmethod
    def execute(cls, vae: str, vocoder: str, precision: str) -> io.NodeOutput:
        return io.NodeOutput(adapters.load_decoder(vae, vocoder, precision))
