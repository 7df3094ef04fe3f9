"""Load an MMAudio VAE checkpoint (``v1-16.pth``, ``v1-44.pth``, Kijai's ``mmaudio_vae_*`` safetensors).

All of them are flat state dicts with raw (un-normalized) conv weights. The module is built on the meta
device, the tensors are assigned strictly (no copy), and the weight normalization is folded once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..modes import mode_of_mels
from .checkpoint_info import expected_shapes, key_mismatch, tensor_shapes, wrong_checkpoint
from .model import VAE, VAEConfig

EXPECTED = "an MMAudio VAE (v1-16.pth / v1-44.pth / mmaudio_vae_*.safetensors)"
_PROBE_KEYS = ("decoder.conv_in.weight", "decoder.conv_out.weight")


def infer_vae_config(state_dict: Mapping[str, Any], source: str = "the VAE checkpoint") -> VAEConfig:
    """Widths from the tensor shapes: data_dim (80: 16k, 128: 44k), embed_dim and hidden_dim."""
    shapes = tensor_shapes(state_dict)
    if any(k not in shapes or len(shapes[k]) != 3 for k in _PROBE_KEYS):
        raise wrong_checkpoint(source, EXPECTED, state_dict)
    data_dim, hidden_dim, _ = shapes["decoder.conv_out.weight"]
    _, embed_dim, _ = shapes["decoder.conv_in.weight"]
    if mode_of_mels(data_dim) is None:
        raise wrong_checkpoint(source, EXPECTED, state_dict,
                               f"its decoder outputs {data_dim} mel bands; MMAudio VAEs have 80 (16k) or 128 (44k)")
    return VAEConfig(data_dim=data_dim, embed_dim=embed_dim, hidden_dim=hidden_dim)


def load_vae(
    state_dict: Mapping[str, Any],
    source: str | None = None,
    ops: Any | None = None,
    config: VAEConfig | None = None,
    dtype: torch.dtype | None = None,
) -> VAE:
    """Build a VAE matching ``state_dict`` and load it strictly; the result is ready for inference.

    ``source`` names the file in error messages. ``config`` overrides the widths inferred from the shapes.
    A checkpoint without any ``encoder.*`` key gives a decode-only VAE; otherwise every key must match.
    ``dtype`` is the storage dtype of the folded conv weights (default: as stored). The tensors of
    ``state_dict`` are taken over, not copied. Raises :class:`~mmaudio.errors.WrongCheckpointError`.
    """
    name = source or "the VAE checkpoint"
    if not isinstance(state_dict, Mapping):
        kind = type(state_dict).__name__
        raise wrong_checkpoint(name, EXPECTED, {}, f"the loaded object is a {kind}, not a state dict")
    config = config or infer_vae_config(state_dict, name)
    with_encoder = any(k.startswith("encoder.") for k in state_dict)
    with torch.device("meta"):
        vae = VAE(config, ops=ops, with_encoder=with_encoder)
    found = tensor_shapes(state_dict)
    mismatch = key_mismatch(expected_shapes(vae), found)
    if mismatch or len(found) != len(state_dict):
        extra = sorted(k for k in state_dict if k not in found)
        raise wrong_checkpoint(name, EXPECTED, state_dict, mismatch or f"it has non-tensor entries {extra[:5]}")
    vae.load_state_dict(dict(state_dict), strict=True, assign=True)
    vae.fold_weights(dtype)
    for param in vae.parameters():
        param.requires_grad_(False)
    vae.source = source
    return vae.eval()


def vae_state_dict_template(config: VAEConfig, with_encoder: bool = True) -> dict[str, tuple[int, ...]]:
    """Key -> shape a checkpoint for ``config`` must have (built on the meta device, no memory)."""
    with torch.device("meta"):
        module: nn.Module = VAE(config, with_encoder=with_encoder)
    return expected_shapes(module)
