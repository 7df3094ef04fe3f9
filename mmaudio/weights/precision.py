"""Storage and compute dtypes, and casting a state dict to a storage dtype without losing what must stay exact.

Weights may be *stored* in fp32, fp16, bf16 or fp8; the arithmetic then runs in a *compute* dtype the device
supports: the storage dtype itself for fp32/fp16/bf16, and bf16 for fp8 (fp16 where bf16 is not supported;
fp8 values fit fp16's range). Layers built from ``mmaudio.ops`` cast their weights to the activation dtype on
the fly, so only the weights of such layers may be narrower than the compute dtype; every other floating
tensor (embeddings used directly, norms' scales, learned tokens) is stored in the compute dtype, and tensors
that the numerics depend on (latent statistics) stay in float32.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch
from torch import nn

from ..errors import InvalidInputError
from ..ops import to_storage_dtype

STORAGE_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}
_ALIASES = {
    "float32": "fp32", "float": "fp32", "f32": "fp32", "full": "fp32",
    "float16": "fp16", "half": "fp16", "f16": "fp16",
    "bfloat16": "bf16",
    "fp8": "fp8_e4m3fn", "float8": "fp8_e4m3fn", "fp8_e4m3": "fp8_e4m3fn", "float8_e4m3fn": "fp8_e4m3fn",
    "float8_e5m2": "fp8_e5m2",
}
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)

# Tensors kept in float32 whatever the storage dtype, per component (fnmatch patterns on state-dict keys).
# The flow network's latent statistics un-normalise every generated latent; the VAE's mel statistics do the
# same for every mel frame. Computed tables (rotary, timestep frequencies, filters) are rebuilt in float32 by
# the modules themselves and are not in the state dicts.
FP32_KEYS: dict[str, tuple[str, ...]] = {
    "network": ("latent_mean", "latent_std"),
    "vae": ("data_mean", "data_std"),
    "vocoder": (),
    "synchformer": (),
    "clip": (),
}

# Layer types whose forward casts its own weight (mmaudio.ops and comfy.ops layers subclass these).
_CASTING_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.Embedding)


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """A storage dtype from a user-facing name ("fp32", "fp16", "bf16", "fp8_e4m3fn", ...) or a torch dtype."""
    if isinstance(name, torch.dtype):
        if name not in STORAGE_DTYPES.values():
            raise InvalidInputError(f"Unsupported weight dtype {name}; use one of {', '.join(STORAGE_DTYPES)}")
        return name
    key = str(name).strip().lower().removeprefix("torch.")
    key = _ALIASES.get(key, key)
    if key not in STORAGE_DTYPES:
        raise InvalidInputError(f"Unknown weight dtype {name!r}; use one of {', '.join(STORAGE_DTYPES)}")
    return STORAGE_DTYPES[key]


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of a storage dtype ("fp16", ...), or torch's own name for other dtypes."""
    for name, value in STORAGE_DTYPES.items():
        if value == dtype:
            return name
    return str(dtype).removeprefix("torch.")


def is_fp8(dtype: torch.dtype) -> bool:
    return dtype in FP8_DTYPES


def supports_bf16(device: torch.device | str | None = None) -> bool:
    """Whether ``device`` computes in bfloat16 natively (CPU: yes; CUDA: Ampere or newer; MPS: recent macOS)."""
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_capability(index)[0] >= 8
    if device.type == "mps":
        try:
            torch.zeros(1, dtype=torch.bfloat16, device=device)
        except (RuntimeError, TypeError):
            return False
        return True
    return True


def compute_dtype_for(
    storage: torch.dtype | str, device: torch.device | str | None = None, *, bf16_supported: bool | None = None
) -> torch.dtype:
    """The dtype the arithmetic runs in for weights stored as ``storage`` on ``device``.

    fp8 computes in bf16, or fp16 where bf16 is unsupported; bf16 storage on such a device computes in fp32
    (bf16 values can overflow fp16).
    """
    storage = parse_dtype(storage)
    has_bf16 = supports_bf16(device) if bf16_supported is None else bf16_supported
    if is_fp8(storage):
        return torch.bfloat16 if has_bf16 else torch.float16
    if storage == torch.bfloat16 and not has_bf16:
        return torch.float32
    return storage


def layer_weight_keys(module: nn.Module) -> set[str]:
    """State-dict keys of the weights that ``module``'s layers cast themselves (may be stored in fp8)."""
    keys = set()
    for name, sub in module.named_modules():
        if isinstance(sub, _CASTING_LAYERS) and getattr(sub, "weight", None) is not None:
            keys.add(f"{name}.weight" if name else "weight")
    return keys


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(key, p) or key.endswith("." + p) for p in patterns)


def cast_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    storage_dtype: torch.dtype | str,
    *,
    keep_fp32: Iterable[str] = (),
    narrow_keys: Iterable[str] | None = None,
    compute_dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """A copy of ``state_dict`` with floating tensors in ``storage_dtype``; integer tensors are left alone.

    ``keep_fp32``: key patterns (``fnmatch``, or a dotted suffix) that stay float32, e.g. ``FP32_KEYS["network"]``.
    For fp8 storage only ``narrow_keys`` (default: every tensor of two or more dimensions; pass
    :func:`layer_weight_keys` of the target module to be exact) become fp8, clamped to the format's range;
    the remaining floating tensors go to ``compute_dtype`` (default :func:`compute_dtype_for` on the CPU).
    Tensors already in the wanted dtype are not copied.
    """
    storage = parse_dtype(storage_dtype)
    keep = tuple(keep_fp32)
    fp8 = is_fp8(storage)
    narrow = None if narrow_keys is None else set(narrow_keys)
    fallback = compute_dtype or compute_dtype_for(storage)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if not tensor.is_floating_point():
            out[key] = tensor
        elif _matches(key, keep):
            out[key] = tensor.to(torch.float32)
        elif not fp8:
            out[key] = tensor.to(storage)
        elif (key in narrow) if narrow is not None else tensor.ndim >= 2:
            out[key] = to_storage_dtype(tensor, storage)
        else:
            out[key] = tensor.to(fallback)
    return out


# ---- the precision policy: what a user's "precision" choice means for each model -----------------------------
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16", "fp8_e4m3fn")
PRECISION_ROLES = ("network", "synchformer", "clip", "decoder")


@dataclass(frozen=True)
class PrecisionPlan:
    """How one model keeps its weights and computes."""

    weight_dtype: torch.dtype
    compute_dtype: torch.dtype


def preferred_half_dtype(device: torch.device | str) -> torch.dtype | None:
    """The half precision ``device`` computes well (bf16 where supported, else fp16 on CUDA; fp16 on MPS), or
    None (the CPU: float32 is faster there). Hosts with their own judgement (ComfyUI) pass theirs instead."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if supports_bf16(device) else torch.float16
    if device.type == "mps":
        return torch.float16
    return None


def plan_precision(precision: str, role: str, half: torch.dtype | None) -> PrecisionPlan:
    """What ``precision`` (one of :data:`PRECISIONS`) means for a model of ``role`` on a device whose good half
    precision is ``half`` (None: none, compute in float32).

    auto: the network and the feature models in ``half``, the decoder in float32 (its output is the audio itself);
    fp32/fp16/bf16: that, for weights and compute; fp8_e4m3fn: layer weights in 8 bits, computed in ``half`` (or
    float32), except CLIP, whose plain torch layers cannot cast 8-bit weights (it keeps auto's choice).
    """
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if role not in PRECISION_ROLES:
        raise ValueError(f"unknown model role {role!r}; expected one of {PRECISION_ROLES}")
    automatic = torch.float32 if role == "decoder" or half is None else half
    if precision == "auto" or (precision == "fp8_e4m3fn" and role == "clip"):
        return PrecisionPlan(automatic, automatic)
    if precision == "fp8_e4m3fn":
        return PrecisionPlan(torch.float8_e4m3fn, half or torch.float32)
    dtype = STORAGE_DTYPES[precision]
    return PrecisionPlan(dtype, dtype)
