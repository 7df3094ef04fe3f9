"""What each node asks of the model library, one small function per stage.

Nodes call only these functions, so the library's entry points can change (or a headless pipeline module can
take over a stage) by editing this file alone. Each function takes and returns the pack's own types
(``nodes/types.py``), loads models through the memory manager right before compute, reports progress through a
:class:`~.progress.NodeProgress` and leaves every output tensor on the CPU.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import torch

from ..mmaudio import sampling, weights
from ..mmaudio.decoder import AudioDecoder
from ..mmaudio.errors import IncompatibleComponentsError, InvalidInputError, MMAudioError
from ..mmaudio.features import frames as frame_selection
from ..mmaudio.features.clip import load_clip
from ..mmaudio.features.extractor import FeatureExtractor
from ..mmaudio.features.streaming import VideoFile
from ..mmaudio.features.synchformer import load_synchformer, num_segments
from ..mmaudio.model import SequenceLengths, build_network_from_state_dict, winograd
from ..mmaudio.model.config import TRAINING_DURATION_S
from ..mmaudio.modes import mode_words
from ..mmaudio.vae import load_vae
from ..mmaudio.vocoder import load_vocoder
from . import model_folder
from .memory import choose_placement, load_for_compute, narrow_layer_weights, to_output, wrap
from .progress import NodeProgress
from .types import (
    AudioConditions,
    AudioLatents,
    DecoderHandle,
    FeatureModelsHandle,
    NetworkHandle,
)
from .video_files import file_view_of

log = logging.getLogger(__name__)

MAX_DURATION_S = 300.0  # the duration widget's limit; also the longest clip-length duration of a video file
CLIP_CHUNK = 16  # CLIP frames per forward
SYNC_SEGMENTS_PER_BATCH = 8  # Synchformer segments per forward


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
    placement = choose_placement(precision)
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
    sync_placement = choose_placement(precision)
    clip_placement = sync_placement
    if sync_placement.weight_dtype not in (torch.float32, torch.float16, torch.bfloat16):
        # CLIP is open_clip's own model (plain torch layers): it cannot keep 8-bit weights.
        clip_placement = choose_placement("auto")
        log.info("MMAudio Sync: CLIP does not support %s weights; using %s", precision, clip_placement.describe())
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
    placement = choose_placement(precision, prefer_half=False)
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


# ---- conditions ----------------------------------------------------------------------------------------------
def split_prompts(text: str) -> list[str]:
    """One prompt per non-empty line (surrounding spaces removed)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def pair_negative_prompts(prompts: Sequence[str], negative_text: str) -> list[str]:
    """No negative line: none; one line: shared by every prompt; else exactly one line per prompt."""
    negatives = split_prompts(negative_text)
    if len(negatives) > 1 and len(negatives) != len(prompts):
        raise InvalidInputError(
            f"negative_prompt: {len(negatives)} lines for {len(prompts)} prompts; give one line for all prompts "
            "or exactly one line per prompt"
        )
    return negatives


def frame_count(frames: Any) -> int:
    """Frames of an IMAGE batch, or of a video file (those read, or the header's count before reading)."""
    if isinstance(frames, VideoFile):
        return frames.num_frames
    return frame_selection.frame_count(frames)


class VisualSource:
    """Frames to extract features from: an IMAGE batch with its frame rate, or a video file streamed with its own
    timestamps (``frames`` is then the :class:`VideoFile`, and ``times`` is filled in once it has been read)."""

    def __init__(self, frames: Any, fps: Fraction | float | None, times: torch.Tensor | None, kind: str) -> None:
        self.frames = frames
        self.fps = fps
        self.times = times
        self.kind = kind

    @property
    def file(self) -> VideoFile | None:
        return self.frames if isinstance(self.frames, VideoFile) else None


def visual_source(images: torch.Tensor | None, fps: float | None, video: Any | None,
                  duration: float | None) -> VisualSource | None:
    """What the encode node's visual inputs amount to (None: text-to-audio)."""
    if images is not None and video is not None:
        raise InvalidInputError("connect either video or images (with fps), not both")
    if video is not None:
        # A file-backed VIDEO is streamed from its file with the file's own timestamps (exact for variable frame
        # rates): frames are chosen and resized while decoding, so a long or 4K clip is never held whole. A trimmed
        # one reads only its window, which keeps the frames get_components() would keep, timed the same way.
        view = file_view_of(video)
        if view is not None:
            # Probed only (a bad file fails here); streamed chunk by chunk when the features are extracted.
            file = VideoFile.open(view.source, duration=duration, start=view.start, length=view.length)
            return VisualSource(file, None, None, "video")
        components = video.get_components()  # frame edits (crop, resize) or no file: only this has the pixels
        images, fps = components.images, components.frame_rate
    if images is None:
        return None
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise InvalidInputError(f"images: expected an IMAGE batch [frames, height, width, channels], got "
                                f"{getattr(images, 'shape', type(images).__name__)}")
    if images.shape[0] == 0:
        raise InvalidInputError("images: the batch has zero frames")
    if images.shape[0] > 1 and (fps is None or not float(fps) > 0):
        raise InvalidInputError(
            "fps: the frame rate of images is required (connect the fps output of Get Video Components, or "
            "VideoHelperSuite's loaded_fps); it decides which frames CLIP and Synchformer see"
        )
    if images.shape[0] == 1:  # a still image: image-to-audio, the frame rate plays no part
        return VisualSource(images, 1, None, "image")
    return VisualSource(images, fps, None, "video")


def _stream_file(source: VisualSource, requested: float | None, mask_away_clip: bool
                 ) -> tuple[frame_selection.PreparedFrames, NodeProgress, tuple[int, int]]:
    """Decode, choose and resize a video file's frames in one pass (one full-resolution chunk held at a time).

    The plan is only known once the file is read, so the bar's CLIP and Synchformer ranges are sized from the
    probed length (each stage reports its own fraction); the frames range advances, and can be cancelled, per chunk.
    """
    file = source.file.for_duration(requested, longest=MAX_DURATION_S)
    source.frames = file
    seconds = file.expected_duration
    clip_units = 0 if mask_away_clip else max(1, int(frame_selection.CLIP_FPS * seconds))
    sync_units = max(1, num_segments(int(frame_selection.SYNC_FPS * seconds)))
    progress = NodeProgress(file.expected_frames + clip_units + sync_units + 1)
    prepared = file.prepare(progress=progress.stage(file.expected_frames))
    source.times = file.timestamps
    return prepared, progress, (clip_units, sync_units)


def encode_conditions(features: FeatureModelsHandle, source: VisualSource | None, prompt: str,
                      negative_prompt: str, duration: float, mask_away_clip: bool) -> AudioConditions:
    """CLIP image, Synchformer and CLIP text features for one clip and its prompts (CPU, float32).

    Every check on the inputs runs before a model is loaded; each model is brought to the compute device by the
    memory manager right before its stage.
    """
    prompts = split_prompts(prompt) or [""]
    negatives = pair_negative_prompts(prompts, negative_prompt)
    requested = float(duration) if duration and duration > 0 else None
    extractor = FeatureExtractor(features.clip.model.clip, features.synchformer.model.synchformer,
                                 device=features.sync_placement.load_device)

    clip_f = sync_f = None
    if source is None:
        lengths = SequenceLengths.for_duration(requested or TRAINING_DURATION_S, "44k")  # clip/sync: any mode
        progress = NodeProgress(1)
        kind = "text"
    else:
        if source.file is not None:
            prepared, progress, (clip_units, sync_units) = _stream_file(source, requested, mask_away_clip)
            plan = prepared.plan
        else:
            plan = frame_selection.plan_frames(frame_selection.frame_count(source.frames), source.fps,
                                               times=source.times, duration=requested)
            clip_units = 0 if mask_away_clip else len(set(plan.clip_indices))
            sync_units = 0 if plan.is_still else num_segments(len(plan.sync_indices))
            progress = NodeProgress(len(plan.source_indices) + clip_units + sync_units + 1)
            prepared = frame_selection.prepare_frames(source.frames, plan,
                                                      progress=progress.stage(len(plan.source_indices)))
        lengths = SequenceLengths.for_duration(plan.duration, "44k")
        kind = "image" if plan.is_still else source.kind
        if not mask_away_clip:
            load_for_compute([features.clip], force_full=True)
            clip_f = extractor.encode_clip_frames(prepared, batch=CLIP_CHUNK, progress=progress.stage(clip_units))
        if not plan.is_still:
            load_for_compute([features.synchformer])
            sync_f = extractor.encode_sync_frames(prepared, batch=SYNC_SEGMENTS_PER_BATCH,
                                                  progress=progress.stage(sync_units))
        del prepared

    load_for_compute([features.clip], force_full=True)
    text_f = extractor.encode_text(prompts)
    negative_f = extractor.encode_text(negatives) if negatives else None
    progress.finish()
    return AudioConditions(
        duration=lengths.duration, clip_seq_len=lengths.clip_seq_len, sync_seq_len=lengths.sync_seq_len,
        clip_features=None if clip_f is None else to_output(clip_f.float()),
        sync_features=None if sync_f is None else to_output(sync_f.float()),
        text_features=to_output(text_f.float()),
        negative_text_features=None if negative_f is None else to_output(negative_f.float()),
        prompts=tuple(prompts), negative_prompts=tuple(negatives), source=kind,
    )


# ---- sampling ------------------------------------------------------------------------------------------------
def _check_lengths(network: NetworkHandle, conditions: AudioConditions) -> SequenceLengths:
    lengths = SequenceLengths.for_duration(conditions.duration, network.mode)
    if (lengths.clip_seq_len, lengths.sync_seq_len) != (conditions.clip_seq_len, conditions.sync_seq_len):
        raise IncompatibleComponentsError(
            f"the conditions were made for other sequence lengths (clip {conditions.clip_seq_len}, sync "
            f"{conditions.sync_seq_len}) than their duration {conditions.duration:g} s needs (clip "
            f"{lengths.clip_seq_len}, sync {lengths.sync_seq_len}); encode them again"
        )
    return lengths


def _sampling_memory(network: NetworkHandle, lengths: SequenceLengths, batch: int) -> int:
    """Rough activation memory of one guided step (both CFG branches in one batch), plus the Winograd filters
    the network keeps while sampling on a CPU in float32."""
    tokens = lengths.latent_seq_len + lengths.clip_seq_len + 77
    hidden = network.network.hidden_dim
    placement = network.placement
    itemsize = torch.finfo(placement.compute_dtype).bits // 8
    activations = int(2 * batch * tokens * hidden * 4 * 6 * itemsize)
    return activations + winograd.expected_filter_bytes(network.network, placement.load_device,
                                                        placement.compute_dtype)


def sample_latents(network: NetworkHandle, conditions: AudioConditions, seed: int, steps: int, cfg: float,
                   samples: int) -> AudioLatents:
    """Euler flow sampling for every prompt of ``conditions`` times ``samples`` (sample k uses seed + k)."""
    if steps < 1:
        raise InvalidInputError(f"steps must be at least 1, got {steps}")
    if samples < 1:
        raise InvalidInputError(f"samples must be at least 1, got {samples}")
    if not math.isfinite(cfg) or cfg < 0:
        raise InvalidInputError(f"cfg must be a finite number >= 0, got {cfg}")
    lengths = _check_lengths(network, conditions)
    prompts = conditions.num_prompts
    batch = prompts * samples
    progress = NodeProgress(steps)

    placement = network.placement
    load_for_compute([network.patcher], memory_required=_sampling_memory(network, lengths, batch))
    net = network.network
    device, dtype = placement.load_device, placement.compute_dtype
    net.update_seq_lengths(lengths.latent_seq_len, lengths.clip_seq_len, lengths.sync_seq_len)

    def rows(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None or x.shape[0] == 1:
            return x
        return x.repeat_interleave(samples, dim=0)

    with torch.inference_mode():
        cond, empty = sampling.build_conditions(
            net, clip_f=conditions.clip_features, sync_f=conditions.sync_features,
            text_f=rows(conditions.text_features), negative_text_f=rows(conditions.negative_text_features),
            batch_size=batch, dtype=dtype, device=device)
        noise = torch.cat([sampling.initial_noise(seed, samples, lengths.latent_seq_len, net.latent_dim)
                           for _ in range(prompts)]).to(device)
        x1 = sampling.sample(net, noise, cond, empty if cfg >= 1.0 else None, num_steps=steps, cfg_strength=cfg,
                             callback=lambda k, total, _x: progress.set(k + 1), compile=network.compile)
        latents = net.unnormalize(x1.float())
    return AudioLatents(
        latents=to_output(latents.float()), mode=network.mode, duration=lengths.duration,
        sample_rate=lengths.sample_rate, seeds=tuple(seed + k for _ in range(prompts) for k in range(samples)),
        prompts=tuple(p for p in conditions.prompts for _ in range(samples)),
    )


# ---- decoding ------------------------------------------------------------------------------------------------
def decode_audio(decoder: DecoderHandle, latents: AudioLatents) -> dict[str, Any]:
    """ComfyUI AUDIO: float32 waveform [B, 1, samples] on the CPU, trimmed to the duration."""
    if latents.mode != decoder.mode or latents.latents.shape[-1] != decoder.latent_dim:
        raise IncompatibleComponentsError(
            f"the latents come from a {mode_words(latents.mode)} network but the decoder is "
            f"{decoder.description}; load the decoder files of the network's mode"
        )
    batch = latents.latents.shape[0]
    progress = NodeProgress(batch)
    model = decoder.decoder
    samples = model.num_samples(latents.duration)
    # The vocoder's activations, one row at a time: a few hundred float32 channels at the audio rate at its widest.
    memory = int(samples * 384 * 4)
    load_for_compute([decoder.patcher], memory_required=memory)
    waves = []
    with torch.inference_mode():
        for row in range(batch):
            latent = latents.latents[row:row + 1].to(decoder.placement.load_device)
            waves.append(model.decode(latent, num_samples=samples).float().cpu())
            progress.set(row + 1)
    return {"waveform": torch.cat(waves).contiguous(), "sample_rate": int(decoder.sample_rate)}

