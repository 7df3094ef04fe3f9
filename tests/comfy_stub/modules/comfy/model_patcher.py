"""Stand-in for ``comfy.model_patcher``: a ModelPatcher that only records where its model belongs."""

from __future__ import annotations

import torch

from . import model_management


class ModelPatcher:
    """Holds a module with its load and offload devices; the memory manager stub moves it."""

    def __init__(self, model: torch.nn.Module, load_device: torch.device, offload_device: torch.device,
                 size: int = 0, weight_inplace_update: bool = False) -> None:
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        self.size = size
        self.weight_inplace_update = weight_inplace_update
        if getattr(model, "device", None) is None:
            model.device = offload_device

    def model_size(self) -> int:
        if self.size <= 0:
            self.size = model_management.module_size(self.model)
        return self.size

    def loaded_size(self) -> int:
        return self.model_size() if self in model_management.current_loaded_models else 0

    def model_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def current_loaded_device(self) -> torch.device:
        return self.model.device
