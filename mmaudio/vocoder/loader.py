"""Load a BigVGAN generator checkpoint: ``best_netG.pt`` (16 kHz) or NVIDIA's ``bigvgan_generator.pt`` (44.1 kHz).

Both files are ``{"generator": state_dict, ...}`` with weight-normalized convs stored as ``<conv>.weight_g`` /
``<conv>.weight_v`` (newer PyTorch spells them ``<conv>.parametrizations.weight.original0/1``). The loader fuses
each pair into a plain ``<conv>.weight`` once, in float32, then loads strictly into a module built on the meta
device.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..modes import MODES, mode_of_mels
from ..vae.checkpoint_info import expected_shapes, key_mismatch, tensor_shapes, wrong_checkpoint
from .bigvgan import BigVGAN
from .config import BigVGANConfig

EXPECTED = "a BigVGAN vocoder (best_netG.pt for 16 kHz, bigvgan_generator.pt of bigvgan_v2_44khz_128band_512x)"

# Suffix -> role ("g": magnitude, "v": direction) of the two weight-norm spellings.
_WEIGHT_NORM_SUFFIXES: dict[str, str] = {
    ".weight_g": "g",
    ".weight_v": "v",
    ".parametrizations.weight.original0": "g",
    ".parametrizations.weight.original1": "v",
}


def generator_state_dict(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    """The generator's state dict: ``checkpoint["generator"]`` when nested (as in the released files)."""
    inner = checkpoint.get("generator") if isinstance(checkpoint, Mapping) else None
    return inner if isinstance(inner, Mapping) else checkpoint


def fuse_weight_norm(weight_g: torch.Tensor, weight_v: torch.Tensor) -> torch.Tensor:
    """g · v / ||v|| with the norm over every dim but 0, in float32 (torch's weight_norm with dim=0)."""
    # torch's own kernel, as PyTorch's weight_norm parametrization evaluates it: bit-identical to the reference.
    return torch._weight_norm(weight_v.to(torch.float32), weight_g.to(torch.float32), 0)


def fold_weight_norm(state_dict: Mapping[str, Any], source: str, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """A new state dict with every weight-norm pair replaced by its fused ``.weight`` (other entries kept).

    A file whose weights are already fused passes through unchanged. ``dtype`` is the storage dtype of the
    fused weights (default: that of ``weight_v``).
    """
    out: dict[str, Any] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        for suffix, role in _WEIGHT_NORM_SUFFIXES.items():
            if key.endswith(suffix):
                pairs.setdefault(key[: -len(suffix)], {})[role] = value
                break
        else:
            out[key] = value
    for prefix, parts in pairs.items():
        if set(parts) != {"g", "v"} or f"{prefix}.weight" in out:
            raise wrong_checkpoint(source, EXPECTED, state_dict,
                                   f"the weight-norm pair of {prefix!r} is incomplete or duplicated (damaged file?)")
        g, v = parts["g"], parts["v"]
        if g.ndim != v.ndim or g.shape[0] != v.shape[0] or g[0].numel() != 1:
            raise wrong_checkpoint(source, EXPECTED, state_dict,
                                   f"{prefix!r}: magnitude {list(g.shape)} does not fit direction {list(v.shape)}")
        out[f"{prefix}.weight"] = fuse_weight_norm(g, v).to(dtype or v.dtype)
    return out


def infer_vocoder_config(state_dict: Mapping[str, Any], source: str = "the vocoder checkpoint") -> BigVGANConfig:
    """Pick v1 16 kHz or v2 44.1 kHz from the mel bands of ``conv_pre`` (80 or 128); the width comes from the
    shapes too. Accepts raw (weight-norm) or fused state dicts."""
    shapes = tensor_shapes(state_dict)
    pre = next((shapes[f"conv_pre{s}"] for s in (".weight", ".weight_v", ".parametrizations.weight.original1")
                if f"conv_pre{s}" in shapes), None)
    has_post = any(k.startswith("conv_post.") for k in shapes) and any(k.startswith("ups.") for k in shapes)
    if pre is None or len(pre) != 3 or not has_post:
        raise wrong_checkpoint(source, EXPECTED, state_dict)
    width, num_mels, _ = pre
    mode = mode_of_mels(num_mels)
    if mode is None:
        raise wrong_checkpoint(source, EXPECTED, state_dict,
                               f"it takes {num_mels} mel bands; MMAudio's vocoders take 80 (16 kHz) or 128 (44.1 kHz)")
    config = BigVGANConfig.for_mode(mode).with_width(width)
    if ("conv_post.bias" in shapes) != config.use_bias_at_final:
        has = "has" if "conv_post.bias" in shapes else "has no"
        raise wrong_checkpoint(source, EXPECTED, state_dict,
                               f"it takes {num_mels} mel bands but {has} conv_post bias, unlike "
                               f"{MODES[mode].vocoder_name}: another BigVGAN release, which MMAudio cannot use")
    return config


def load_vocoder(
    state_dict: Mapping[str, Any],
    source: str | None = None,
    ops: Any | None = None,
    config: BigVGANConfig | Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> BigVGAN:
    """Build the BigVGAN that ``state_dict`` holds, fuse weight norm and load strictly, ready for inference.

    ``state_dict`` may be the whole checkpoint (``{"generator": ...}``) or the generator's state dict.
    ``config`` (a BigVGANConfig or a hub ``config.json`` mapping) overrides the detection from shapes.
    ``dtype`` is the storage dtype of the fused weights (default: as stored); snake parameters stay as
    stored and filters are kept in float32. Raises :class:`~mmaudio.errors.WrongCheckpointError`.
    """
    name = source or "the vocoder checkpoint"
    if not isinstance(state_dict, Mapping):
        kind = type(state_dict).__name__
        raise wrong_checkpoint(name, EXPECTED, {}, f"the loaded object is a {kind}, not a state dict")
    raw = generator_state_dict(state_dict)
    if isinstance(config, Mapping):
        config = BigVGANConfig.from_dict(config)
    config = config or infer_vocoder_config(raw, name)
    fused = fold_weight_norm(raw, name, dtype)
    with torch.device("meta"):
        vocoder = BigVGAN(config, ops=ops)
    found = tensor_shapes(fused)
    mismatch = key_mismatch(expected_shapes(vocoder), found)
    if mismatch or len(found) != len(fused):
        extra = sorted(k for k in fused if k not in found)
        raise wrong_checkpoint(name, EXPECTED, raw, mismatch or f"it has non-tensor entries {extra[:5]}")
    vocoder.load_state_dict(fused, strict=True, assign=True)
    for key, buffer in vocoder.named_buffers():
        if key.endswith("filter") and buffer.dtype != torch.float32:
            vocoder.get_submodule(key.rsplit(".", 1)[0]).filter = buffer.to(torch.float32)
    for param in vocoder.parameters():
        param.requires_grad_(False)
    vocoder.source = source
    return vocoder.eval()


def vocoder_checkpoint_template(config: BigVGANConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a released checkpoint's generator for ``config``: legacy ``weight_g``/``weight_v`` names,
    filters included (built on the meta device, no memory)."""
    with torch.device("meta"):
        vocoder = BigVGAN(config)
    conv_weights = {f"{name}.weight" for name, m in vocoder.named_modules()
                    if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))}
    template: dict[str, tuple[int, ...]] = {}
    for key, shape in expected_shapes(vocoder).items():
        if key in conv_weights:
            prefix = key[: -len(".weight")]
            template[f"{prefix}.weight_g"] = (shape[0],) + (1,) * (len(shape) - 1)
            template[f"{prefix}.weight_v"] = shape
        else:
            template[key] = shape
    return template
