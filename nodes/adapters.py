"""What each node asks of the library: loading through ComfyUI's model folders, and the engine's stages.

The generation itself is the engine's (``mmaudio/engine``); this file only translates. Its :class:`NodeRuntime`
is the engine's runtime for ComfyUI: models reach their device through the memory manager
(``load_models_gpu`` with the engine's memory estimate), progress goes to the node's progress bar, and Cancel
raises from the progress callback, within one sampling step or one chunk of frames.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..mmaudio import engine, weights
from ..mmaudio.decoder import AudioDecoder
from ..mmaudio.errors import IncompatibleComponentsError, InvalidInputError, MMAudioError
from ..mmaudio.features.clip import load_clip
from ..mmaudio.features.streaming import VideoFile
from ..mmaudio.features.synchformer import load_synchformer
from ..mmaudio.model import build_network_from_state_dict
from ..mmaudio.vae import load_vae
from ..mmaudio.vocoder import load_vocoder
from . import model_folder
from .memory import choose_placement, load_for_compute, narrow_layer_weights, wrap
from .progress import NodeProgress, check_interrupt
from .types import DecoderHandle, FeatureModelsHandle, NetworkHandle
from .video_files import file_view_of

log = logging.getLogger(__name__)

MAX_DURATION_S = engine.MAX_DURATION_S  # the duration widget's limit


# ---- files ---------------------------------------------------------------------------------------------------
def files_of_kind(kind: str) -> list[str]:
    """Weight files of the ``mmaudio`` folders that hold a component of ``kind`` (network, vae, vocoder, clip,
    synchformer), identified by their tensor names and shapes, never by file name. Never raises: a listing
    error must not keep ComfyUI from registering the nodes."""
    try:
        return [found.name for found in weights.list_files_of_kind(model_folder.folder_paths_list(), kind)]
    except Exception:
        log.exception("MMAudio Sync: could not list the %s files of the mmaudio model folders", kind)
        return []


def _load_component(name: str, kind: str, title: str) -> dict[str, torch.Tensor]:
    """The state dict of the ``kind`` component in file ``name`` (its own key names, any nesting removed)."""
    path = model_folder.resolve(name, title)
    try:
        return weights.load_component(path, kind)[0]
    except MMAudioError as exc:  # the message already names the file and says what it is
        raise type(exc)(f"{title}: {exc}") from exc


def file_fingerprint(*names: str) -> tuple:
    """(name, size, mtime) of each file, so a loader reruns when a file is replaced under the same name."""
    out = []
    for name in names:
        try:
            stat = os.stat(model_folder.resolve(name, "file"))
            out.append((name, stat.st_size, stat.st_mtime_ns))
        except (FileNotFoundError, OSError):
            out.append((name, None, None))
    return tuple(out)


# ---- loaders -------------------------------------------------------------------------------------------------
def _build(title: str, file_name: str, build: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a library builder; its errors get the loader and the file in front."""
    try:
        return build(*args, **kwargs)
    except MMAudioError as exc:
        raise type(exc)(f"{title}: {file_name!r} cannot be used: {exc}") from exc


def load_network(file_name: str, precision: str) -> NetworkHandle:
    title = "MMAudio network loader"
    placement = choose_placement(precision, "network")
    state_dict = _load_component(file_name, "network", title)
    network = _build(title, file_name, build_network_from_state_dict, state_dict, ops=placement.ops,
                     device=placement.offload_device, dtype=placement.compute_dtype)
    del state_dict
    config = network.config
    if config.mode is None:
        raise IncompatibleComponentsError(
            f"{title}: {file_name!r} makes {config.latent_dim}-channel latents, which neither the 16 kHz "
            "(20 channels) nor the 44.1 kHz (40 channels) decoder can turn into audio"
        )
    if placement.weight_dtype != placement.compute_dtype:
        narrow_layer_weights(network, placement.weight_dtype)
    handle = NetworkHandle(patcher=wrap(placement, network=network), variant=config.name, mode=config.mode,
                           latent_dim=config.latent_dim, placement=placement, file_name=file_name)
    log.info("MMAudio Sync: loaded network %s as %s", handle.describe(), placement.describe())
    return handle


def load_feature_models(clip_file: str, synchformer_file: str, precision: str) -> FeatureModelsHandle:
    title = "MMAudio feature-models loader"
    sync_placement = choose_placement(precision, "synchformer")
    clip_placement = choose_placement(precision, "clip")  # open_clip's plain layers cannot keep 8-bit weights
    clip_sd = _load_component(clip_file, "clip", f"{title} (CLIP)")
    clip = _build(f"{title} (CLIP)", clip_file, load_clip, clip_sd, dtype=clip_placement.compute_dtype,
                  device=clip_placement.offload_device)
    del clip_sd
    sync_sd = _load_component(synchformer_file, "synchformer", f"{title} (Synchformer)")
    synchformer = _build(f"{title} (Synchformer)", synchformer_file, load_synchformer, sync_sd,
                         dtype=sync_placement.compute_dtype, device=sync_placement.offload_device,
                         ops=sync_placement.ops)
    del sync_sd
    if sync_placement.weight_dtype != sync_placement.compute_dtype:
        narrow_layer_weights(synchformer, sync_placement.weight_dtype)
    return FeatureModelsHandle(clip=wrap(clip_placement, clip=clip),
                               synchformer=wrap(sync_placement, synchformer=synchformer),
                               clip_placement=clip_placement, sync_placement=sync_placement, clip_file=clip_file,
                               synchformer_file=synchformer_file)


def load_decoder(vae_file: str, vocoder_file: str, precision: str) -> DecoderHandle:
    title = "MMAudio decoder loader"
    placement = choose_placement(precision, "decoder")
    storage = placement.compute_dtype
    vae = _build(f"{title} (VAE)", vae_file, load_vae, _load_component(vae_file, "vae", f"{title} (VAE)"),
                 source=vae_file, ops=placement.ops, dtype=storage)
    vocoder = _build(f"{title} (vocoder)", vocoder_file, load_vocoder,
                     _load_component(vocoder_file, "vocoder", f"{title} (vocoder)"), source=vocoder_file,
                     ops=placement.ops, dtype=storage)
    decoder = AudioDecoder(vae, vocoder)  # raises IncompatibleComponentsError for a 16k VAE with a 44k vocoder
    if placement.weight_dtype != placement.compute_dtype:
        narrow_layer_weights(decoder, placement.weight_dtype)
    return DecoderHandle(patcher=wrap(placement, decoder=decoder), mode=decoder.mode,
                         sample_rate=decoder.sample_rate, latent_dim=decoder.latent_dim, placement=placement,
                         description=decoder.describe())


# ---- the engine's runtime in ComfyUI -------------------------------------------------------------------------
class NodeRuntime:
    """Models through the memory manager, progress on the node's bar, Cancel from the progress callback.

    ``full_load``: ModelPatchers of models made of plain torch layers (open_clip's CLIP), which cannot run partly
    offloaded and must be loaded whole.
    """

    def __init__(self, full_load: tuple[Any, ...] = ()) -> None:
        self._full_load = full_load
        self._bar: NodeProgress | None = None
        self._stages: dict[str, Any] = {}

    @contextmanager
    def stage(self, name: str, models: Any, memory_required: int = 0) -> Iterator[None]:
        patchers = [placed.handle for placed in models]
        load_for_compute(patchers, memory_required=memory_required,
                         force_full=any(p is q for p in patchers for q in self._full_load))
        yield

    def plan(self, units: Any) -> None:
        self._bar = NodeProgress(sum(units.values()))
        self._stages = {name: self._bar.stage(count) for name, count in units.items()}

    def progress(self, stage: str, done: int, total: int) -> None:
        report = self._stages.get(stage)
        if report is None:
            check_interrupt()
        else:
            report(done, total)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.finish()


# ---- conditions ----------------------------------------------------------------------------------------------
def visual_source(images: torch.Tensor | None, fps: float | None, video: Any | None) -> engine.VisualSource | None:
    """What the encode node's visual inputs amount to (None: text-to-audio)."""
    if images is not None and video is not None:
        raise InvalidInputError("connect either video or images (with fps), not both")
    if video is not None:
        # A file-backed VIDEO is streamed from its file with the file's own timestamps (exact for variable frame
        # rates): frames are chosen and resized while decoding, so a long or 4K clip is never held whole. A trimmed
        # one reads only its window, which keeps the frames get_components() would keep, timed the same way.
        view = file_view_of(video)
        if view is not None:  # probed here: a bad file fails before any model is loaded
            return engine.VisualSource.from_file(VideoFile.open(view.source, start=view.start, length=view.length))
        components = video.get_components()  # frame edits (crop, resize) or no file: only this has the pixels
        images, fps = components.images, components.frame_rate
    if images is None:
        return None
    return engine.VisualSource.from_images(images, fps)


def encode_conditions(features: FeatureModelsHandle, source: engine.VisualSource | None, prompt: str,
                      negative_prompt: str, duration: float, mask_away_clip: bool,
                      network: NetworkHandle | None = None) -> engine.EncodedConditions:
    """The engine's encode stage; ``network`` (optional) puts long soundtracks' windows on its latent grid."""
    prompts = engine.parse_prompts(prompt, negative_prompt)
    runtime = NodeRuntime(full_load=(features.clip,))
    conditions = engine.encode_conditions(features.models, source, prompts, duration=duration or None,
                                          mask_away_clip=mask_away_clip, runtime=runtime,
                                          mode=None if network is None else network.mode)
    runtime.finish()
    return conditions


# ---- sampling ------------------------------------------------------------------------------------------------
def sample_latents(network: NetworkHandle, conditions: engine.EncodedConditions, seed: int, steps: int, cfg: float,
                   samples: int, *, denoise: float = 1.0, source: engine.AudioLatents | None = None,
                   ) -> engine.AudioLatents:
    """The engine's sampling stage (sample k of every prompt uses seed + k), from ``source`` when given."""
    settings = engine.SamplingSettings(seed=seed, steps=steps, cfg=cfg, samples=samples, compile=network.compile,
                                       denoise=denoise)
    runtime = NodeRuntime()
    latents = engine.sample_latents(network.placed, conditions, settings, runtime, source)
    runtime.finish()
    return latents


# ---- audio in ------------------------------------------------------------------------------------------------
def encode_audio(decoder: DecoderHandle, audio: Any) -> engine.AudioLatents:
    """A ComfyUI AUDIO ({"waveform": [B, C, T], "sample_rate": int}) -> latents of the decoder's mode."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise InvalidInputError("audio: expected a ComfyUI AUDIO (a waveform and its sample rate)")
    runtime = NodeRuntime()
    latents = engine.encode_audio_latents(decoder.placed, audio["waveform"], audio["sample_rate"], runtime)
    runtime.finish()
    return latents


def regenerate_range(latents: engine.AudioLatents, start: float, end: float, fade: float) -> engine.AudioLatents:
    """The same latents, marked so a sampler regenerates ``start``..``end`` seconds (end 0: to the end)."""
    marked = engine.RegenerateRange(start=float(start), end=None if not end else float(end), fade=float(fade))
    if marked.start >= latents.duration and marked.end is not None:
        raise InvalidInputError(f"start: {marked.start:g} s is after the end of the {latents.duration:.2f} s audio")
    return dataclasses.replace(latents, regenerate=marked)


# ---- decoding ------------------------------------------------------------------------------------------------
def decode_audio(decoder: DecoderHandle, latents: engine.AudioLatents) -> dict[str, Any]:
    """ComfyUI AUDIO: float32 waveform [B, 1, samples] on the CPU, trimmed to the duration."""
    runtime = NodeRuntime()
    waveform = engine.decode_audio(decoder.placed, latents, runtime)
    runtime.finish()
    return {"waveform": waveform, "sample_rate": int(decoder.sample_rate)}
