"""Stand-in for ``comfy.model_management``: devices, dtype policy, a recording memory manager, interrupts.

Tests may set ``TORCH_DEVICE``, ``FP16_SUPPORTED``/``BF16_SUPPORTED`` and read ``load_calls`` (every
``load_models_gpu`` call: the patchers and the memory asked for) and ``current_loaded_models``.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

TORCH_DEVICE = torch.device("cpu")
FP16_SUPPORTED = False
BF16_SUPPORTED = False
FP8_COMPUTE = False

load_calls: list[dict[str, Any]] = []
current_loaded_models: list[Any] = []


class InterruptProcessingException(Exception):  # noqa: N818  (ComfyUI's name)
    pass


_interrupt_lock = threading.RLock()
_interrupt = False


def get_torch_device() -> torch.device:
    return TORCH_DEVICE


def intermediate_device() -> torch.device:
    return torch.device("cpu")


def unet_offload_device() -> torch.device:
    return torch.device("cpu")


def text_encoder_device() -> torch.device:
    return TORCH_DEVICE


def text_encoder_offload_device() -> torch.device:
    return torch.device("cpu")


def vae_device() -> torch.device:
    return TORCH_DEVICE


def vae_offload_device() -> torch.device:
    return torch.device("cpu")


def is_device_cpu(device: torch.device) -> bool:
    return torch.device(device).type == "cpu"


def is_device_mps(device: torch.device) -> bool:
    return torch.device(device).type == "mps"


def is_device_cuda(device: torch.device) -> bool:
    return torch.device(device).type == "cuda"


def should_use_fp16(device=None, model_params=0, prioritize_performance=True, manual_cast=False) -> bool:
    if device is not None and is_device_cpu(device):
        return False
    return FP16_SUPPORTED


def should_use_bf16(device=None, model_params=0, prioritize_performance=True, manual_cast=False) -> bool:
    if device is not None and is_device_cpu(device):
        return False
    return BF16_SUPPORTED


def supports_fp8_compute(device=None) -> bool:
    return FP8_COMPUTE


def module_size(module: torch.nn.Module) -> int:
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False) -> None:
    load_calls.append({"models": list(models), "memory_required": memory_required,
                       "force_full_load": force_full_load})
    for patcher in models:
        patcher.model.to(patcher.load_device)
        patcher.model.device = patcher.load_device
        if patcher in current_loaded_models:
            current_loaded_models.remove(patcher)
        current_loaded_models.insert(0, patcher)


def load_model_gpu(model) -> None:
    load_models_gpu([model])


def unload_all_models() -> None:
    for patcher in current_loaded_models:
        patcher.model.to(patcher.offload_device)
        patcher.model.device = patcher.offload_device
    current_loaded_models.clear()


def soft_empty_cache(force: bool = False) -> None:
    return None


def get_free_memory(dev=None, torch_free_too=False):
    free = 64 * 1024**3
    return (free, free) if torch_free_too else free


def cast_to_device(tensor: torch.Tensor, device, dtype, copy: bool = False) -> torch.Tensor:
    return tensor.to(device=device, dtype=dtype, copy=copy)


def interrupt_current_processing(value: bool = True) -> None:
    global _interrupt
    with _interrupt_lock:
        _interrupt = value


def processing_interrupted() -> bool:
    with _interrupt_lock:
        return _interrupt


def throw_exception_if_processing_interrupted() -> None:
    global _interrupt
    with _interrupt_lock:
        if _interrupt:
            _interrupt = False
            raise InterruptProcessingException()
