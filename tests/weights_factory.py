"""Weights files with the published key names, for identification and loading tests, kept small on disk.

Shapes come from the reference manifests (every key and shape of every published file). Full-size files would
take gigabytes, so two tricks keep tests cheap:

- *scaled* shapes: every wide dimension is replaced consistently by a small one (hidden 896 -> 128 and its
  multiples), while the dimensions identification relies on (mel bands, latent sizes, kernel sizes, block
  counts, head size) are kept. Such files are real, loadable checkpoints of a smaller model.
- *sparse* full-size safetensors: the real header followed by a hole of the right length. The file is a valid
  safetensors of all-zero tensors, reads like the real thing, and occupies almost no disk blocks. (A ``.pth``
  cannot be written this way, so full-size ``.pth`` identification is tested from the manifests' shape tables.)

Files are written in the layouts users have: the originals (``torch.save``; BigVGAN nested under
``'generator'``; Synchformer with its audio branch) and Kijai's flat fp16/fp32 safetensors.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.parity.cases import load_manifest

# component -> manifest file
MANIFESTS: dict[str, str] = {
    "small_16k": "mmaudio_small_16k.json",
    "small_44k": "mmaudio_small_44k.json",
    "medium_44k": "mmaudio_medium_44k.json",
    "large_44k": "mmaudio_large_44k.json",
    "large_44k_v2": "mmaudio_large_44k_v2.json",
    "vae_16k": "vae_v1-16.json",
    "vae_44k": "vae_v1-44.json",
    "vocoder_16k": "bigvgan_16k_best_netG.json",
    "vocoder_44k": "bigvgan_v2_44k.json",
    "synchformer": "synchformer.json",
    "clip": "clip_dfn5b_vit_h_14_384.json",
}
NETWORKS = ("small_16k", "small_44k", "medium_44k", "large_44k", "large_44k_v2")

# Wide dimension -> small dimension, per width family (each original value is mapped once, independently).
# (hidden 448 -> 32 and 896 -> 64 with head size 64 -> 32; SwiGLU widths follow the 2/3 rule rounded to 256)
_SMALL_NET = {448: 32, 1280: 256, 1344: 96, 2688: 192, 896: 64, 64: 32}
_LARGE_NET = {896: 64, 2560: 256, 2688: 192, 5376: 384, 1792: 128, 64: 32}
_BIGVGAN = {1536: 128, 768: 64, 384: 32, 192: 16, 96: 8, 48: 4, 24: 2}
SCALES: dict[str, dict[int, int]] = {
    "small_16k": _SMALL_NET, "small_44k": _SMALL_NET,
    "medium_44k": _LARGE_NET, "large_44k": _LARGE_NET, "large_44k_v2": _LARGE_NET,
    "vae_16k": {384: 16, 768: 32, 1536: 64, 4608: 192},
    "vae_44k": {512: 24, 1024: 48, 2048: 96, 6144: 288},
    "vocoder_16k": _BIGVGAN, "vocoder_44k": _BIGVGAN,
    "synchformer": {768: 32, 2304: 96, 3072: 128},
    "clip": {1280: 32, 3840: 96, 5120: 128, 1024: 32, 3072: 96, 4096: 128, 49408: 500},
}

# Synchformer's audio branch and sync head are in the published file but not in the manifest; a few tensors
# with their prefixes stand in for them.
_AUDIO_BRANCH = {
    "afeat_extractor.patch_embed.proj.weight": (32, 1, 16, 16),
    "afeat_extractor.blocks.0.attn.qkv.weight": (96, 32),
    "aproj.weight": (32, 32),
    "vproj.weight": (32, 32),
    "transformer.blocks.0.attn.qkv.weight": (96, 32),
    "transformer.head.weight": (21, 32),
}


def manifest_shapes(component: str) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of the published file of ``component`` (its state dict, un-nested)."""
    keys = load_manifest(MANIFESTS[component])["keys"]
    return {name: tuple(entry["shape"]) for name, entry in keys.items()}


def scaled_shapes(component: str) -> dict[str, tuple[int, ...]]:
    """The manifest shapes with wide dimensions shrunk (see the module docstring)."""
    scale = SCALES[component]
    return {name: tuple(scale.get(d, d) for d in shape) for name, shape in manifest_shapes(component).items()}


def random_state_dict(shapes: dict[str, tuple[int, ...]], dtype: torch.dtype = torch.float32,
                      seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: (torch.randn(shape, generator=generator) * 0.02).to(dtype) for name, shape in shapes.items()}


def original_layout(component: str, state_dict: dict[str, torch.Tensor]) -> dict:
    """The object the original release pickles for ``component`` around ``state_dict``."""
    if component.startswith("vocoder"):
        return {"generator": state_dict}
    if component == "synchformer":
        extra = random_state_dict(_AUDIO_BRANCH, state_dict[next(iter(state_dict))].dtype, seed=99)
        return {**state_dict, **extra}
    return state_dict


def write_original(component: str, path: Path, *, scaled: bool = True, seed: int = 0,
                   dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """``torch.save`` a random ``component`` the way its original file is laid out; returns its state dict."""
    shapes = scaled_shapes(component) if scaled else manifest_shapes(component)
    state_dict = random_state_dict(shapes, dtype, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(original_layout(component, state_dict), path)
    return state_dict


def write_kijai(component: str, path: Path, *, dtype: torch.dtype = torch.float16, seed: int = 0,
                with_audio_branch: bool = True) -> dict[str, torch.Tensor]:
    """A flat safetensors with the original key names (Kijai's conversions); returns the component's tensors."""
    state_dict = random_state_dict(scaled_shapes(component), dtype, seed)
    if component == "clip":  # Kijai's CLIP stores logit_scale with shape [1]
        state_dict["logit_scale"] = state_dict["logit_scale"].reshape(1)
    tensors = dict(state_dict)
    if component == "synchformer" and with_audio_branch:
        tensors.update(random_state_dict(_AUDIO_BRANCH, dtype, seed=99))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return state_dict


def write_sparse_safetensors(shapes: dict[str, tuple[int, ...]], path: Path, dtype: str = "F16") -> Path:
    """A valid safetensors of all-zero tensors whose data region is a hole (almost no disk blocks)."""
    itemsize = {"F32": 4, "F16": 2, "BF16": 2}[dtype]
    header: dict[str, object] = {}
    offset = 0
    for name, shape in shapes.items():
        nbytes = math.prod(shape) * itemsize
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        handle.truncate(8 + len(raw) + offset)
    return path


def is_sparse(path: Path) -> bool:
    """Whether the file system stored ``path`` with holes (so a test may write gigabyte-size headers)."""
    stat = path.stat()
    return getattr(stat, "st_blocks", stat.st_size) * 512 < min(stat.st_size, 16 * 1024 * 1024)
