"""Small random-weight model files for the node tests and the end-to-end ComfyUI test.

The network, VAE, vocoder and CLIP are shrunk (the library reads their architecture off the tensor shapes).
Synchformer too: one block of width 64 (the tiny network's sync features are that wide).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 378, "layers": 1, "width": 32, "head_width": 16, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@dataclasses.dataclass(frozen=True)
class TinyModels:
    """File names (inside the models folder) and the sizes the network was built for."""

    network: str
    clip: str
    synchformer: str
    vae: str
    vocoder: str
    clip_dim: int
    text_dim: int
    tiny_clip: bool = True  # always, now that the library reads CLIP's architecture off the checkpoint


def _random_like(shapes: dict[str, torch.Tensor], generator: torch.Generator, dtype: torch.dtype,
                 scale: float = 0.02) -> dict[str, torch.Tensor]:
    out = {}
    for key, ref in shapes.items():
        if not ref.is_floating_point():
            out[key] = torch.zeros(ref.shape, dtype=ref.dtype)
            continue
        value = torch.randn(tuple(ref.shape), generator=generator, dtype=torch.float32) * scale
        if key.endswith(("norm.weight", "ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight",
                         "ln_final.weight", "norm1.weight", "norm2.weight", "norm3.weight")):
            value += 1.0
        out[key] = value.to(dtype).contiguous()
    return out


def _meta_state(module_factory: Any) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        module = module_factory()
    return module.state_dict()


SYNC_DIM = 64  # the small Synchformer's width, which the network's sync features must match


def write_network(path: Path, *, clip_dim: int, text_dim: int, seed: int = 1) -> None:
    """A 16 kHz custom network: width 64, one joint and one fused block."""
    from mmaudio.model import MMAudioNetwork, NetworkConfig, SequenceLengths

    lengths = SequenceLengths.for_duration(8.0, "16k")
    config = NetworkConfig(latent_dim=20, hidden_dim=64, depth=2, fused_depth=1, num_heads=1, clip_dim=clip_dim,
                           text_dim=text_dim, sync_dim=SYNC_DIM, mode="16k", latent_seq_len=lengths.latent_seq_len,
                           clip_seq_len=lengths.clip_seq_len, sync_seq_len=lengths.sync_seq_len)
    torch.manual_seed(seed)
    network = MMAudioNetwork(config)
    state = {k: v.detach().clone().contiguous() for k, v in network.state_dict().items()}
    state["latent_std"] = torch.ones_like(state["latent_std"])
    save_file(state, str(path))


def write_vae(path: Path, seed: int = 2) -> None:
    """A 16 kHz VAE of width 16, with its encoder (audio in)."""
    from mmaudio.vae import VAE, VAEConfig

    torch.manual_seed(seed)
    vae = VAE(VAEConfig(data_dim=80, embed_dim=20, hidden_dim=16), with_encoder=True)
    save_file({k: v.detach().clone().contiguous() for k, v in vae.state_dict().items()}, str(path))


def write_vocoder(path: Path, seed: int = 3) -> None:
    """A BigVGAN v1 16 kHz generator of width 64 (six stages halve it down to one channel; fused weights)."""
    from mmaudio.vocoder import BigVGAN, BigVGANConfig

    torch.manual_seed(seed)
    vocoder = BigVGAN(BigVGANConfig.for_mode("16k").with_width(64))
    save_file({k: v.detach().clone().contiguous() for k, v in vocoder.state_dict().items()}, str(path))


def write_synchformer(path: Path, seed: int = 4, depth: int = 1, dim: int = SYNC_DIM) -> None:
    """The visual encoder with ``depth`` blocks of width ``dim`` (the loader reads both off the file), random fp16
    weights, in the published ``vfeat_extractor.`` layout."""
    from mmaudio.features.synchformer import SynchformerVisual

    generator = torch.Generator().manual_seed(seed)
    state = _random_like(_meta_state(lambda: SynchformerVisual(depth=depth, dim=dim)), generator, torch.float16)
    save_file({f"vfeat_extractor.{k}": v for k, v in state.items()}, str(path))


def write_clip(path: Path, config: dict[str, Any], seed: int = 5) -> None:
    """An open_clip CLIP of ``config`` with random fp16 weights."""
    from mmaudio.features.clip import build_clip

    generator = torch.Generator().manual_seed(seed)
    state = _random_like(build_clip(config).state_dict(), generator, torch.float16)
    state.pop("attn_mask", None)
    save_file(state, str(path))


def write_models(folder: Path, *, allow_full_clip: bool = False) -> TinyModels:
    """Every model file the graph needs, in ``folder``. (``allow_full_clip`` is accepted for older callers; CLIP
    is always written small.)"""
    folder.mkdir(parents=True, exist_ok=True)
    write_clip(folder / "tiny_clip.safetensors", TINY_CLIP_CONFIG)
    clip_dim, text_dim = TINY_CLIP_CONFIG["embed_dim"], TINY_CLIP_CONFIG["text_cfg"]["width"]
    write_network(folder / "tiny_network_16k.safetensors", clip_dim=clip_dim, text_dim=text_dim)
    write_vae(folder / "tiny_vae_16k.safetensors")
    write_vocoder(folder / "tiny_vocoder_16k.safetensors")
    write_synchformer(folder / "random_synchformer_fp16.safetensors")
    return TinyModels(network="tiny_network_16k.safetensors", clip="tiny_clip.safetensors",
                      synchformer="random_synchformer_fp16.safetensors", vae="tiny_vae_16k.safetensors",
                      vocoder="tiny_vocoder_16k.safetensors", clip_dim=clip_dim, text_dim=text_dim)
