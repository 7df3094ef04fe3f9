"""Devices, dtypes, layer ops and the memory-manager glue of the node layer (nodes/memory.py, nodes/progress.py)."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from .pack_loader import PACK_NAME, stubbed_pack


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    with stubbed_pack(tmp_path_factory.mktemp("models")) as loaded:
        yield loaded


@pytest.fixture
def memory(pack):
    return sys.modules[f"{PACK_NAME}.nodes.memory"]


@pytest.fixture
def mm(pack):
    module = sys.modules["comfy.model_management"]
    saved = (module.TORCH_DEVICE, module.BF16_SUPPORTED, module.FP16_SUPPORTED)
    yield module
    module.TORCH_DEVICE, module.BF16_SUPPORTED, module.FP16_SUPPORTED = saved


def test_cpu_auto_is_fp32_with_casting_comfy_ops(memory, mm):
    placement = memory.choose_placement("auto", "network")
    assert placement.load_device == torch.device("cpu") and placement.offload_device == torch.device("cpu")
    assert placement.weight_dtype == placement.compute_dtype == torch.float32
    assert issubclass(placement.ops, sys.modules["comfy.ops"].manual_cast)


def test_auto_follows_comfyui_half_precision_choice(memory, mm):
    mm.TORCH_DEVICE = torch.device("meta")  # any non-CPU device: the stand-in then answers from its flags
    mm.BF16_SUPPORTED, mm.FP16_SUPPORTED = True, True
    assert memory.choose_placement("auto", "network").compute_dtype == torch.bfloat16
    assert memory.choose_placement("auto", "decoder").compute_dtype == torch.float32
    mm.BF16_SUPPORTED = False
    assert memory.choose_placement("auto", "network").compute_dtype == torch.float16
    fp8 = memory.choose_placement("fp8_e4m3fn", "network")
    assert (fp8.weight_dtype, fp8.compute_dtype) == (torch.float8_e4m3fn, torch.float16)
    assert memory.choose_placement("bf16", "network").weight_dtype == torch.bfloat16


def test_fp8_on_cpu_computes_in_fp32(memory, mm):
    placement = memory.choose_placement("fp8_e4m3fn", "network")
    assert (placement.weight_dtype, placement.compute_dtype) == (torch.float8_e4m3fn, torch.float32)


def test_unknown_precision_is_refused(pack, memory):
    errors = sys.modules[f"{PACK_NAME}.mmaudio.errors"]
    with pytest.raises(errors.InvalidInputError, match="precision"):
        memory.choose_placement("int4", "network")


def test_narrowing_touches_only_comfy_layer_weights(memory):
    ops = sys.modules["comfy.ops"].manual_cast

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = ops.Linear(4, 4)
            self.norm = ops.LayerNorm(4)
            self.scale = nn.Parameter(torch.ones(4))

    block = Block()
    with torch.no_grad():  # comfy.ops layers skip random initialisation
        for param in block.parameters():
            param.copy_(torch.linspace(-1, 1, param.numel()).view_as(param))
    memory.narrow_layer_weights(block, torch.float8_e4m3fn)
    assert block.proj.weight.dtype == torch.float8_e4m3fn
    assert block.proj.bias.dtype == torch.float32
    assert block.norm.weight.dtype == torch.float32 and block.scale.dtype == torch.float32
    out = block.proj(torch.randn(2, 4))  # comfy.ops casts the 8-bit weight per call
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_patcher_root_keeps_bookkeeping_off_library_modules(memory):
    class WithDeviceProperty(nn.Module):  # like MMAudioNetwork: ``device`` is a read-only property
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(2, 2)

        @property
        def device(self):
            return self.layer.weight.device

    placement = memory.choose_placement("auto", "network")
    patcher = memory.wrap(placement, network=WithDeviceProperty())
    patcher.model.device = torch.device("cpu")  # what ModelPatcher.load() does to its root
    assert isinstance(patcher.model.network, WithDeviceProperty)


def test_loose_tensors_follow_a_partial_load(memory):
    """ComfyUI's partial loader moves leaf modules only; tensors held by parent modules must follow too."""
    ops = sys.modules["comfy.ops"].manual_cast

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = ops.Linear(3, 3)
            self.empty_feat = nn.Parameter(torch.zeros(1, 3))
            self.register_buffer("stats", torch.ones(3))

    placement = memory.choose_placement("auto", "network")
    patcher = memory.wrap(placement, network=Net())
    patcher.load_device = torch.device("meta")
    memory.pin_loose_tensors(patcher)  # a full load: nothing to do
    assert patcher.model.network.empty_feat.device.type == "cpu"
    patcher.model.model_lowvram = True
    memory.pin_loose_tensors(patcher)
    net = patcher.model.network
    assert net.empty_feat.device.type == "meta" and isinstance(net.empty_feat, nn.Parameter)
    assert net.stats.device.type == "meta"
    assert net.proj.weight.device.type == "cpu", "leaf layers stay where the memory manager put them"


def test_progress_stages_split_one_bar(pack):
    progress_module = sys.modules[f"{PACK_NAME}.nodes.progress"]
    utils = sys.modules["comfy.utils"]
    seen = []
    utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: seen.append((value, total)))
    try:
        bar = progress_module.NodeProgress(10)
        frames = bar.stage(4)
        clip = bar.stage(6)
        frames(1, 2)
        frames(2, 2)
        clip(3, 3)
        bar.finish()
    finally:
        utils.set_progress_bar_global_hook(None)
    assert seen == [(2, 10), (4, 10), (10, 10)]  # finishing a full bar reports nothing new
