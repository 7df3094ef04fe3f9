"""Loading the five components from their files for a host that owns its device (command line, benchmark).

The ComfyUI nodes load through ComfyUI's model folders and memory manager instead (``nodes/loaders``), with the
same precision policy (:func:`mmaudio.weights.plan_precision`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..decoder import AudioDecoder
from ..errors import IncompatibleComponentsError, InvalidInputError
from ..features.clip import load_clip
from ..features.synchformer import load_synchformer
from ..model import MMAudioNetwork, build_network_from_state_dict
from ..ops import store_layer_weights
from ..vae import load_vae
from ..vocoder import load_vocoder
from ..weights import load_component, plan_precision, preferred_half_dtype
from .conditions import FeatureModels
from .runtime import Placed

COMPONENT_KINDS = ("network", "vae", "vocoder", "clip", "synchformer")
LoadProgress = Callable[[str, int, int], None]


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


@dataclass(frozen=True)
class LoadedModels:
    """Everything a generation needs, each model with where it computes."""

    network: Placed[MMAudioNetwork]
    features: FeatureModels
    decoder: Placed[AudioDecoder]

    @property
    def mode(self) -> str:
        return str(self.network.module.config.mode)


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, then Apple's MPS, then the CPU. A named device must exist here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise InvalidInputError(f"device {name!r}: not a device name; expected auto, cpu, cuda, cuda:N or mps"
                                ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(f"device {name!r}: no CUDA device is usable here (no NVIDIA driver, or a "
                                    "PyTorch built without CUDA); use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidInputError(f"device {name!r}: there are only {torch.cuda.device_count()} CUDA devices "
                                    f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InvalidInputError(f"device {name!r}: Apple's MPS is not available here; use cpu or auto")
    elif device.type != "cpu":
        raise InvalidInputError(f"device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    return device


def default_weights_folder() -> Path:
    """``$MMAUDIO_WEIGHTS`` or ``~/.cache/mmaudio-sync`` (the command line's download target)."""
    configured = os.environ.get("MMAUDIO_WEIGHTS")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "mmaudio-sync"


def load_models(files: ComponentFiles, *, device: str | torch.device = "auto", precision: str = "auto",
                offload: bool = False, progress: LoadProgress | None = None) -> LoadedModels:
    """Load every component from its file (safe loaders only; each file is checked to be of its kind).

    ``offload``: the models wait on the CPU and visit the device only for their stage (see DirectRuntime).
    ``progress(component, done, 5)`` follows each file.
    """
    device = pick_device(device) if isinstance(device, str) else device
    half = preferred_half_dtype(device)
    home = torch.device("cpu") if offload else device
    paths = files.as_dict()

    def step(done: int, kind: str) -> None:
        if progress is not None:
            progress(f"loading {kind}", done, len(COMPONENT_KINDS))

    step(0, "network")
    plan = plan_precision(precision, "network", half)
    state, _ = load_component(paths["network"], "network")
    network = build_network_from_state_dict(state, device=home, dtype=plan.compute_dtype)
    del state
    if network.config.mode is None:
        raise IncompatibleComponentsError(
            f"{paths['network'].name} makes {network.latent_dim}-channel latents, which no published decoder turns "
            "into audio")
    _narrow(network, plan.weight_dtype, plan.compute_dtype)
    network_placed = Placed(network, device, plan.compute_dtype)

    step(1, "vae")
    plan = plan_precision(precision, "decoder", half)
    vae = load_vae(load_component(paths["vae"], "vae")[0], source=paths["vae"].name, dtype=plan.compute_dtype)
    step(2, "vocoder")
    vocoder = load_vocoder(load_component(paths["vocoder"], "vocoder")[0], source=paths["vocoder"].name,
                           dtype=plan.compute_dtype)
    decoder = AudioDecoder(vae, vocoder).to(home)
    decoder.check_compatible(network.config.mode, network.config.name, network.latent_dim)
    _narrow(decoder, plan.weight_dtype, plan.compute_dtype)
    decoder_placed = Placed(decoder, device, decoder.compute_dtype)

    step(3, "clip")
    plan = plan_precision(precision, "clip", half)
    clip = load_clip(load_component(paths["clip"], "clip")[0], dtype=plan.compute_dtype, device=home)
    clip_placed = Placed(clip, device, plan.compute_dtype)
    step(4, "synchformer")
    plan = plan_precision(precision, "synchformer", half)
    synchformer = load_synchformer(load_component(paths["synchformer"], "synchformer")[0],
                                   dtype=plan.compute_dtype, device=home)
    _narrow(synchformer, plan.weight_dtype, plan.compute_dtype)
    step(5, "synchformer")
    return LoadedModels(network_placed, FeatureModels(clip_placed, Placed(synchformer, device, plan.compute_dtype)),
                        decoder_placed)


def _narrow(module: torch.nn.Module, weight_dtype: torch.dtype, compute_dtype: torch.dtype) -> None:
    """Keep the layer weights in ``weight_dtype`` (fp8) where it is narrower than the compute dtype."""
    if weight_dtype != compute_dtype:
        store_layer_weights(module, weight_dtype)
