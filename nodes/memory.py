"""Hand every model to ComfyUI's memory manager, and pick devices, dtypes and layer ops the ComfyUI way.

Models are built on the offload device (CPU) from ``comfy.ops`` layers, wrapped in a ``ModelPatcher`` and moved
only by ``comfy.model_management.load_models_gpu`` right before compute. The memory manager then decides what
stays resident, can load a model partially (``comfy.ops`` layers cast their weights per call) and evicts it when
another model needs room. Nothing here calls ``.cuda()``; node outputs are moved to ``intermediate_device()``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import torch
from torch import nn

from ..mmaudio.ops import store_layer_weights
from ..mmaudio.weights import plan_precision

PRECISION_TOOLTIP = (
    "Storage and compute precision of the weights. auto: bf16 or fp16 where the device computes them well "
    "(ComfyUI decides), else fp32 (always fp32 on CPU). fp8_e4m3fn stores layer weights in 8 bits (half the "
    "memory of fp16) and computes in bf16/fp16; quality may drop slightly."
)
_CAST_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d)


@dataclass(frozen=True)
class Placement:
    """Where a model lives and computes: devices, weight storage dtype, activation dtype and layer ops."""

    load_device: torch.device
    offload_device: torch.device
    weight_dtype: torch.dtype
    compute_dtype: torch.dtype
    ops: Any

    def describe(self) -> str:
        weight = str(self.weight_dtype).removeprefix("torch.")
        compute = str(self.compute_dtype).removeprefix("torch.")
        dtypes = weight if weight == compute else f"{weight} weights, {compute} compute"
        return f"{dtypes} on {self.load_device}"


def half_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 or fp16 when ComfyUI says the device runs it well (never on CPU), else None."""
    if mm.should_use_bf16(device):
        return torch.bfloat16
    if mm.should_use_fp16(device):
        return torch.float16
    return None


def layer_ops(weight_dtype: torch.dtype, compute_dtype: torch.dtype, load_device: torch.device) -> Any:
    """A ``comfy.ops`` namespace whose layers cast their weights to the activations' dtype and device per call.

    Casting layers are what partial loading needs, and they keep the library's contract that a layer accepts
    activations in another dtype than its weights (float32 timestep features into a bf16 network).
    """
    ops = comfy.ops.pick_operations(weight_dtype, compute_dtype, load_device=load_device)
    if not (isinstance(ops, type) and issubclass(ops, comfy.ops.manual_cast)):
        ops = comfy.ops.manual_cast
    return ops


def choose_placement(precision: str, role: str) -> Placement:
    """Devices and dtypes for a model of ``role`` ("network", "synchformer", "clip", "decoder") loaded with
    ``precision``: the library's policy (:func:`plan_precision`) with ComfyUI's judgement of half precision."""
    load_device = mm.get_torch_device()
    plan = plan_precision(precision, role, half_dtype(load_device))
    return Placement(load_device=load_device, offload_device=mm.unet_offload_device(), weight_dtype=plan.weight_dtype,
                     compute_dtype=plan.compute_dtype, ops=layer_ops(plan.weight_dtype, plan.compute_dtype,
                                                                      load_device))


def narrow_layer_weights(module: nn.Module, dtype: torch.dtype) -> None:
    """Store the weights of the Linear/Conv layers in ``dtype`` (fp8); norms, embeddings and the bare
    parameters (latent statistics, learned empty features) keep the compute dtype they were built in."""
    store_layer_weights(module, dtype, _is_comfy_casting_layer)


def _is_comfy_casting_layer(layer: nn.Module) -> bool:
    return isinstance(layer, _CAST_LAYERS) and hasattr(layer, "comfy_cast_weights")


class ModelRoot(nn.Module):
    """The module a ModelPatcher owns: it holds the library's modules as children.

    ModelPatcher writes bookkeeping attributes (``device``, ``model_lowvram``, ...) on its root module; keeping
    them on this wrapper leaves the library's modules untouched (``MMAudioNetwork.device`` is a property).
    """

    def __init__(self, **parts: nn.Module) -> None:
        super().__init__()
        for name, part in parts.items():
            self.add_module(name, part)


@functools.cache
def _root_class(name: str) -> type[ModelRoot]:
    # ComfyUI logs "Requested to load <root class name>": name the root after what it holds.
    return type(name, (ModelRoot,), {"__doc__": ModelRoot.__doc__})


def wrap(placement: Placement, **parts: nn.Module) -> comfy.model_patcher.ModelPatcher:
    """A ModelPatcher over ``parts`` (already built on the offload device)."""
    root = _root_class("+".join(type(part).__name__ for part in parts.values()))(**parts)
    return comfy.model_patcher.ModelPatcher(root, load_device=placement.load_device,
                                            offload_device=placement.offload_device)


def _loose_tensors(root: nn.Module) -> list[tuple[nn.Module, str, bool]]:
    """(module, name, is_buffer) for tensors held directly by a module that also has child modules with
    tensors: ComfyUI's partial loader only moves leaf modules, so those would stay on the offload device."""
    found = []
    for module in root.modules():
        has_child_tensors = any(
            True for child in module.children() for _ in (*child.parameters(), *child.buffers())
        )
        if not has_child_tensors:
            continue
        found += [(module, name, False) for name, p in module._parameters.items() if p is not None]
        found += [(module, name, True) for name, b in module._buffers.items() if b is not None]
    return found


def pin_loose_tensors(patcher: comfy.model_patcher.ModelPatcher) -> None:
    """After a partial load, move the few small tensors the partial loader skips to the compute device.

    A full load moves the whole module and needs nothing; a later unload moves everything back.
    """
    if not getattr(patcher.model, "model_lowvram", False):
        return
    device = patcher.load_device
    for module, name, is_buffer in _loose_tensors(patcher.model):
        if is_buffer:
            module._buffers[name] = module._buffers[name].to(device)
        else:
            param = module._parameters[name]
            module._parameters[name] = nn.Parameter(param.detach().to(device), requires_grad=param.requires_grad)


def load_for_compute(patchers: list[comfy.model_patcher.ModelPatcher], memory_required: int = 0,
                     force_full: bool = False) -> None:
    """Ask the memory manager to bring ``patchers`` to their compute device (evicting others as needed).

    ``force_full`` is for models made of plain torch layers (open_clip's CLIP), which cannot run partly offloaded.
    """
    mm.load_models_gpu(patchers, memory_required=int(memory_required), force_full_load=force_full)
    for patcher in patchers:
        pin_loose_tensors(patcher)

