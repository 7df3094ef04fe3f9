"""The three compute nodes: encode conditions (video/image/text), sample latents, decode to AUDIO.

Encode and decode also send a small ``ui`` payload (``nodes/ui_payloads.py``) that the pack's frontend draws:
the timing the conditions were made for, and the waveform of every generated sample. A payload that cannot be
built is left out; it never fails the node.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import torch
from comfy_api.latest import io

from ..mmaudio.model.compiled import COMPILE_MODES, compile_mode
from . import adapters, ui_payloads
from .types import ConditionsType, DecoderType, FeatureModelsType, LatentType, NetworkType

log = logging.getLogger(__name__)

CATEGORY = "audio/MMAudio"
MAX_SEED = 0xFFFFFFFFFFFFFFFF


def _payload(build: Callable[[], dict[str, list]]) -> dict[str, list] | None:
    """The ui payload, or None (logged) if it cannot be built: drawing help must never fail a node."""
    try:
        return build()
    except Exception:  # a display payload must never fail the node
        log.warning("MMAudio Sync: could not build the node's display payload", exc_info=True)
        return None


class MMAudioSyncEncodeConditions(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MMAudioSyncEncodeConditions",
            display_name="MMAudio Encode Conditions",
            category=CATEGORY,
            description=(
                "Turns a clip and prompts into MMAudio conditions. Frames are picked by time at 8 fps (CLIP) and "
                "25 fps (Synchformer) from the clip's real frame rate, as the reference reads a video file. "
                "Connect a VIDEO, or IMAGE frames with their fps, a single image (image-to-audio), or nothing "
                "(text-to-audio)."
            ),
            inputs=[
                FeatureModelsType.Input("feature_models", tooltip="From MMAudio Feature Models Loader."),
                io.Image.Input("images", optional=True,
                               tooltip="Frames of the clip (IMAGE batch), e.g. from Get Video Components or "
                                       "VideoHelperSuite's Load Video; needs fps. A single image gives "
                                       "image-to-audio and needs a duration."),
                io.Float.Input("fps", optional=True, default=0.0, min=0.0, max=1000.0, step=0.001,
                               tooltip="Frame rate of images: connect Get Video Components' fps or VHS's "
                                       "loaded_fps. Required with more than one image; ignored with video."),
                io.Video.Input("video", optional=True,
                               tooltip="A VIDEO (e.g. Load Video). A video file is decoded with its own "
                                       "timestamps, frame by frame; use either this or images."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="What should be heard. One prompt per line: each line becomes its own "
                                        "generation in the batch (same clip). Empty: no text guidance.\n"
                                        "Prompt that changes over time: start lines with a time in brackets, "
                                        "seconds or minutes:seconds, e.g.\n  rain on a tin roof\n  [12] thunder, "
                                        "heavy rain\n  [1:05] birds after the storm\n(one soundtrack; each 8 s "
                                        "window uses the prompt in force at its middle)."),
                io.String.Input("negative_prompt", multiline=True, default="",
                                tooltip="What should not be heard, e.g. 'music'. One line for every prompt, or "
                                        "exactly one line per prompt line; with a timed prompt, one line or "
                                        "timed lines. Empty: the model's unconditional prompt."),
                io.Float.Input("duration", default=0.0, min=0.0, max=adapters.MAX_DURATION_S, step=0.01,
                               tooltip="Seconds of audio. 0 uses the clip length (8 s, the training length, "
                                       "without a clip). Longer than the clip: cut to the clip. Up to 10 s run "
                                       "in one pass; longer soundtracks run as overlapping 8 s windows (the "
                                       "training length), each conditioned on its own part of the video and "
                                       "blended at every step."),
                io.Boolean.Input("mask_away_clip", default=False,
                                 tooltip="Ignore what the frames show (CLIP) and keep only their timing "
                                         "(Synchformer): sound follows the prompt, synced to the motion."),
                NetworkType.Input("network", optional=True,
                                  tooltip="Optional: the network you sample with. Soundtracks longer than 10 s are "
                                          "cut into windows on its latent grid; without it, on the 44.1 kHz grid "
                                          "(every variant but small_16k), and a 16 kHz network moves them to its "
                                          "own grid (within 16 ms)."),
            ],
            outputs=[
                ConditionsType.Output(display_name="conditions",
                                      tooltip="Features for the sampler, with their duration (kept on the CPU)."),
                io.Float.Output(display_name="duration",
                                tooltip="Seconds of audio the conditions were made for (after fitting the clip)."),
            ],
        )

    @classmethod
    def execute(cls, feature_models: Any, prompt: str, negative_prompt: str, duration: float,
                mask_away_clip: bool, images: torch.Tensor | None = None, fps: float | None = None,
                video: Any | None = None, network: Any | None = None) -> io.NodeOutput:
        source = adapters.visual_source(images, fps, video)
        conditions = adapters.encode_conditions(feature_models, source, prompt, negative_prompt, duration,
                                                mask_away_clip, network)

        def timing() -> dict[str, list]:
            return ui_payloads.conditions_timing_payload(conditions, mask_away_clip=mask_away_clip)

        return io.NodeOutput(conditions, float(conditions.duration), ui=_payload(timing))


class MMAudioSyncSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MMAudioSyncSampler",
            display_name="MMAudio Sampler",
            category=CATEGORY,
            description=(
                "Generates audio latents with the MMAudio flow network (Euler steps with classifier-free "
                "guidance) for the duration the conditions were made for. Noise comes from a CPU generator, so a "
                "seed gives the same audio on any device."
            ),
            inputs=[
                NetworkType.Input("network", tooltip="From MMAudio Network Loader."),
                ConditionsType.Input("conditions", tooltip="From MMAudio Encode Conditions."),
                io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True,
                             tooltip="Noise seed. Sample k of every prompt uses seed + k, so each prompt line gets "
                                     "the same noise and prompts can be compared."),
                io.Int.Input("steps", default=25, min=1, max=500,
                             tooltip="Euler steps (network evaluations per sample, times two with guidance). "
                                     "25 is the reference setting."),
                io.Float.Input("cfg", default=4.5, min=0.0, max=30.0, step=0.1,
                               tooltip="Classifier-free guidance strength: how strongly the audio follows the "
                                       "video and prompt. 4.5 is the reference setting; below 1 disables "
                                       "guidance (half the compute)."),
                io.Int.Input("samples", default=1, min=1, max=64,
                             tooltip="Generations per prompt line (consecutive seeds). The batch holds prompt 1's "
                                     "samples first, then prompt 2's, and so on."),
                LatentType.Input("latents", optional=True,
                                 tooltip="Optional: latents to start from (MMAudio Encode Audio, or a sampler's "
                                         "output): audio-to-audio with denoise below 1, and with MMAudio "
                                         "Regenerate Range only that range is generated again (or the part "
                                         "past the audio's end: extension)."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="With input latents: how much of the way from noise is redone. 1: new "
                                       "audio (the same as without latents, for the same seed); 0: the input "
                                       "unchanged; in between: audio-to-audio, keeping more of the input the "
                                       "lower it is."),
            ],
            outputs=[LatentType.Output(display_name="latents",
                                       tooltip="Audio latents for MMAudio Decode (kept on the CPU).")],
        )

    @classmethod
    def execute(cls, network: Any, conditions: Any, seed: int, steps: int, cfg: float, samples: int,
                denoise: float = 1.0, latents: Any | None = None) -> io.NodeOutput:
        return io.NodeOutput(adapters.sample_latents(network, conditions, seed, steps, cfg, samples,
                                                     denoise=denoise, source=latents))


COMPILE_CHOICES = [*(name for name in COMPILE_MODES if name != "off"), "off"]  # the library's, "off" last


class MMAudioSyncCompileNetwork(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MMAudioSyncCompileNetwork",
            display_name="MMAudio Compile Network",
            category=CATEGORY,
            description=(
                "Optional, between the network loader and the sampler: the sampler runs the flow network "
                "through torch.compile. The first generation compiles (a minute or more, again for each new "
                "duration or batch size); later ones run faster on a GPU. On a CPU it brings no gain. If "
                "compiling fails, sampling goes on with the plain network and the log says why."
            ),
            inputs=[
                NetworkType.Input("network", tooltip="From MMAudio Network Loader."),
                io.Combo.Input("mode", options=COMPILE_CHOICES, default="compile",
                               tooltip="compile: torch.compile. cuda_graphs: also capture each step as CUDA "
                                       "graphs (fastest on a GPU; fixed shapes). off: pass the network through."),
            ],
            outputs=[NetworkType.Output(display_name="network",
                                        tooltip="The same network, sampled through torch.compile.")],
        )

    @classmethod
    def execute(cls, network: Any, mode: str) -> io.NodeOutput:
        compile_mode(mode)  # an unknown mode is refused here, with the library's message
        return io.NodeOutput(dataclasses.replace(network, compile=mode))


class MMAudioSyncDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MMAudioSyncDecode",
            display_name="MMAudio Decode",
            category=CATEGORY,
            description=(
                "Turns latents into audio with the VAE and vocoder: mono, 16000 Hz or 44100 Hz as the network's "
                "mode says, cut to the conditions' duration. Connect Preview Audio, Save Audio or Create Video."
            ),
            inputs=[
                DecoderType.Input("decoder", tooltip="From MMAudio Decoder Loader, of the network's mode."),
                LatentType.Input("latents", tooltip="From MMAudio Sampler."),
            ],
            outputs=[io.Audio.Output(display_name="audio",
                                     tooltip="Mono waveform batch (one entry per generation) at the model's rate.")],
        )

    @classmethod
    def execute(cls, decoder: Any, latents: Any) -> io.NodeOutput:
        audio = adapters.decode_audio(decoder, latents)
        seeds = latents.seeds or (None,) * len(latents.prompts)  # encoded audio has no seed
        labels = [f"{prompt or '(no prompt)'}" + ("" if seed is None else f" · seed {seed}")
                  for prompt, seed in zip(latents.prompts, seeds, strict=True)]
        return io.NodeOutput(audio, ui=_payload(lambda: ui_payloads.audio_waveform_payload(audio, labels=labels)))


class MMAudioSyncEncodeAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MMAudioSyncEncodeAudio",
            display_name="MMAudio Encode Audio",
            category=CATEGORY,
            description=(
                "Turns audio into MMAudio latents with the decoder's VAE (its encoder), as the model's training "
                "latents were made: mono, resampled to the network's rate, the reference's mel front-end. Feed "
                "them to MMAudio Sampler's latents input (audio-to-audio, regeneration, extension)."
            ),
            inputs=[
                DecoderType.Input("decoder", tooltip="From MMAudio Decoder Loader (a VAE file with its encoder), of "
                                                     "the network's mode."),
                io.Audio.Input("audio", tooltip="Any AUDIO: any sample rate, mono or stereo, any length (e.g. Load "
                                                "Audio, or Get Video Components' audio)."),
            ],
            outputs=[
                LatentType.Output(display_name="latents", tooltip="The audio's latents (kept on the CPU)."),
                io.Float.Output(display_name="duration", tooltip="Seconds of audio encoded."),
            ],
        )

    @classmethod
    def execute(cls, decoder: Any, audio: dict[str, Any]) -> io.NodeOutput:
        latents = adapters.encode_audio(decoder, audio)
        return io.NodeOutput(latents, float(latents.duration))


class MMAudioSyncRegenerateRange(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MMAudioSyncRegenerateRange",
            display_name="MMAudio Regenerate Range",
            category=CATEGORY,
            description=(
                "Marks the part of input latents the sampler generates again; the rest is kept exactly, and the "
                "new part is generated to join it (no clicks). End 0 regenerates to the end of the soundtrack, "
                "also past the end of the audio when the video is longer: extension."
            ),
            inputs=[
                LatentType.Input("latents", tooltip="From MMAudio Encode Audio (or a sampler's output)."),
                io.Float.Input("start", default=0.0, min=0.0, max=adapters.MAX_DURATION_S, step=0.01,
                               tooltip="Seconds where the regenerated range begins."),
                io.Float.Input("end", default=0.0, min=0.0, max=adapters.MAX_DURATION_S, step=0.01,
                               tooltip="Seconds where it ends; 0: the end of the soundtrack (and past the input "
                                       "audio, if the video is longer)."),
                io.Float.Input("fade", default=0.1, min=0.0, max=5.0, step=0.01,
                               tooltip="Seconds of soft edge inside the range at each end, where new and kept "
                                       "audio blend."),
            ],
            outputs=[LatentType.Output(display_name="latents",
                                       tooltip="The same latents, marked for the sampler's latents input.")],
        )

    @classmethod
    def execute(cls, latents: Any, start: float, end: float, fade: float) -> io.NodeOutput:
        return io.NodeOutput(adapters.regenerate_range(latents, start, end, fade))
