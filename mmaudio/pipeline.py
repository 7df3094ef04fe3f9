"""The whole video-to-audio job without ComfyUI: load the five components, extract features, sample, decode.

The nodes run the same library stages through ComfyUI's memory manager; this module is for scripts, the
command line and benchmarks, where one process owns one device.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .decoder import AudioDecoder
from .errors import IncompatibleComponentsError, InvalidInputError
from .features.extractor import FeatureExtractor
from .features.streaming import VideoFile
from .model import MMAudioNetwork, SequenceLengths, build_network_from_state_dict
from .model.config import TRAINING_DURATION_S
from .ops import store_layer_weights
from .sampling import DEFAULT_CFG, DEFAULT_STEPS, generate_latents
from .vae import load_vae
from .vocoder import load_vocoder
from .weights import load_component, parse_dtype

log = logging.getLogger(__name__)

# stage name, units done, units in all
StageProgress = Callable[[str, int, int], None]

COMPONENT_KINDS = ("network", "vae", "vocoder", "clip", "synchformer")


@dataclass(frozen=True)
class ComponentFiles:
    """One weights file per component; any of the published layouts, identified by content."""

    network: Path
    vae: Path
    vocoder: Path
    clip: Path
    synchformer: Path

    def as_dict(self) -> dict[str, Path]:
        return {kind: Path(getattr(self, kind)) for kind in COMPONENT_KINDS}


@dataclass
class GenerationResult:
    """Float32 waveforms [B, 1, samples] on the CPU at ``sample_rate``, with what produced them."""

    waveform: torch.Tensor
    sample_rate: int
    duration: float
    seeds: list[int] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, then Apple's MPS, then the CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on CUDA devices that support it, fp16 on MPS, fp32 on the CPU."""
    if precision != "auto":
        dtype = parse_dtype(precision)
        if dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            return torch.bfloat16
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


class MMAudioPipeline:
    """Network, decoder and feature extractor on one device, with the stages chained.

    With ``offload`` the models wait on the CPU and each stage moves only its own models to the device (features:
    CLIP and Synchformer; sampling: the network; decoding: VAE and vocoder): the device then holds at most the
    largest stage (2.2 GB of bf16 weights for large_44k_v2 instead of 4.9 GB), at the cost of the transfers.
    """

    def __init__(self, network: MMAudioNetwork, decoder: AudioDecoder, features: FeatureExtractor,
                 device: torch.device, dtype: torch.dtype, *, offload: bool = False) -> None:
        mode = network.config.mode
        if mode is None:
            raise IncompatibleComponentsError(
                f"the network makes {network.latent_dim}-channel latents, which no published decoder turns into audio"
            )
        decoder.check_compatible(mode, network.config.name)
        self.network = network
        self.decoder = decoder
        self.features = features
        self.device = device
        self.dtype = dtype
        self.offload = offload
        if offload:
            for module in (network, decoder, features):
                module.to("cpu")

    @contextmanager
    def _stage(self, *modules: torch.nn.Module) -> Iterator[None]:
        """The stage's models on the device while it runs; with ``offload``, back on the CPU afterwards (also
        after an error), so the next stage finds the device memory free."""
        if not self.offload:
            yield
            return
        try:
            for module in modules:
                module.to(self.device)
            yield
        finally:
            for module in modules:
                module.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    @classmethod
    def from_files(cls, files: ComponentFiles, *, device: str | torch.device = "auto",
                   precision: str = "auto", offload: bool = False) -> MMAudioPipeline:
        """Load every component from its file (safe loaders only; each file is checked to be of its kind).
        ``offload``: keep the models on the CPU between their stages (see the class)."""
        device = pick_device(device) if isinstance(device, str) else device
        dtype = pick_compute_dtype(precision, device)
        paths = files.as_dict()
        load_device = torch.device("cpu") if offload else device

        network_sd, _ = load_component(paths["network"], "network")
        network = build_network_from_state_dict(network_sd, device=load_device, dtype=dtype)
        del network_sd
        if precision.startswith("fp8"):
            store_layer_weights(network, parse_dtype(precision))

        # The VAE and vocoder are small and sensitive to half precision: fp32 unless fp16/bf16 is asked for.
        decoder_dtype = dtype if precision in ("fp16", "bf16") else torch.float32
        vae_sd, _ = load_component(paths["vae"], "vae")
        vocoder_sd, _ = load_component(paths["vocoder"], "vocoder")
        vae = load_vae(vae_sd, source=paths["vae"].name, dtype=decoder_dtype)
        vocoder = load_vocoder(vocoder_sd, source=paths["vocoder"].name, dtype=decoder_dtype)
        decoder = AudioDecoder(vae, vocoder).to(load_device)
        del vae_sd, vocoder_sd

        clip_sd, _ = load_component(paths["clip"], "clip")
        sync_sd, _ = load_component(paths["synchformer"], "synchformer")
        features = FeatureExtractor.from_state_dicts(clip_sd, sync_sd, dtype=dtype, device=load_device)
        del clip_sd, sync_sd
        return cls(network, decoder, features, device, dtype, offload=offload)

    @property
    def sample_rate(self) -> int:
        return int(self.decoder.sample_rate)

    def generate(self, *, prompts: Sequence[str], negative_prompt: str = "", video: Any = None,
                 frames: Any = None, fps: Any = None, times: Any = None, duration: float | None = None,
                 seed: int = 42, steps: int = DEFAULT_STEPS, cfg: float = DEFAULT_CFG, num_samples: int = 1,
                 mask_away_clip: bool = False, progress: StageProgress | None = None,
                 compile: str = "off") -> GenerationResult:
        """Audio for one clip (or none: text-to-audio) and one or more prompts; ``num_samples`` per prompt.
        ``compile`` ("off", "compile", "cuda_graphs") compiles the network's forward on first use.

        The clip is ``video`` (a file path or a binary file object), streamed: frames are chosen and resized as
        they are decoded, so the clip is never held whole at full resolution. Or ``frames`` with ``fps``/``times``.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts) or [""]
        if num_samples < 1:
            raise InvalidInputError(f"num_samples must be at least 1, got {num_samples}")
        if steps < 1:
            raise InvalidInputError(f"steps must be at least 1, got {steps}")
        if video is not None and frames is not None:
            raise InvalidInputError("give either a video file or frames, not both")
        if video is None and frames is None and duration is None:
            duration = TRAINING_DURATION_S

        def stage(name: str) -> Callable[[int, int], None] | None:
            if progress is None:
                return None
            return lambda done, total: progress(name, done, total)

        with self._stage(self.features):
            if video is not None:
                file = VideoFile.open(video, duration=duration)
                conditions = self.features(None, None, prompts, stream=file, decode_progress=stage("frames"),
                                           with_clip=not mask_away_clip, progress=stage("features"))
            else:
                conditions = self.features(frames, fps, prompts, times=times, duration=duration,
                                           with_clip=not mask_away_clip, progress=stage("features"))
            negative_f = self.features.encode_text([negative_prompt]) if negative_prompt else None

        lengths = SequenceLengths.for_duration(conditions.duration, self.network.config.mode)
        self.network.update_seq_lengths(lengths.latent_seq_len, lengths.clip_seq_len, lengths.sync_seq_len)
        latents, seeds, prompt_rows = [], [], []
        step_progress = stage("sampling")
        with self._stage(self.network), torch.inference_mode():
            for row, prompt in enumerate(prompts):
                def pick(x: torch.Tensor | None, row: int = row) -> torch.Tensor | None:
                    return None if x is None else x[row:row + 1].expand(num_samples, -1, -1)

                latents.append(generate_latents(
                    self.network, seed=seed, clip_f=pick(conditions.clip_f), sync_f=pick(conditions.sync_f),
                    text_f=pick(conditions.text_f),
                    negative_text_f=None if negative_f is None else negative_f.expand(num_samples, -1, -1),
                    mask_away_clip=mask_away_clip, batch_size=num_samples, num_steps=steps, cfg_strength=cfg,
                    dtype=self.dtype, device=self.device, compile=compile,
                    callback=None if step_progress is None else
                    (lambda k, total, _x: step_progress(k + 1, total)),
                ).cpu())
                seeds.extend(seed + k for k in range(num_samples))
                prompt_rows.extend([prompt] * num_samples)
        waves = []
        with self._stage(self.decoder), torch.inference_mode():
            for row, rows_latents in enumerate(latents):
                waves.append(self.decoder.decode(rows_latents.to(self.device), duration=lengths.duration).float().cpu())
                if progress is not None:
                    progress("decoding", row + 1, len(prompts))
        return GenerationResult(torch.cat(waves), self.sample_rate, lengths.duration, seeds, prompt_rows)


def default_weights_folder() -> Path:
    """``$MMAUDIO_WEIGHTS`` or ``~/.cache/mmaudio-sync`` (the command line's download target)."""
    configured = os.environ.get("MMAUDIO_WEIGHTS")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "mmaudio-sync"
