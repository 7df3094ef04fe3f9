"""The weight bytes each stage of a variant holds on the compute device, at the precisions a GPU run uses.

    python bench/memory_budget.py --variant large_44k_v2

No GPU needed and nothing is allocated: every model is built on the meta device from the library's own
configurations (the same builders as the benchmark), then stored as the library stores it for a given weights
dtype (fp8: layer weights in fp8, the rest in the compute dtype). Activations are not included: they come from
a measured run (``bench/benchmark.py --device cuda`` reports the peak of every stage). The point is the floor
that weights alone put under a peak-memory target, with all models resident, with one stage at a time, and in the
low-VRAM mode (one stage at a time, the network and CLIP streamed: their non-block weights and the two largest
blocks on the device, ``block_streaming.streaming_peak_bytes``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch import nn

from bench import components
from bench.library import library_module

GB = 1e9
STAGES = {"features": ("clip", "synchformer"), "sampling": ("network",), "decoding": ("vae_decoder", "vocoder")}


def _bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def _network(spec: components.VariantSpec, dtype: torch.dtype, compute: torch.dtype) -> nn.Module:
    model = library_module("model")
    ops = library_module("ops")
    precision = library_module("weights.precision")
    with torch.device("meta"):
        net = model.MMAudioNetwork(spec.network)
    net = net.to(compute)
    if precision.is_fp8(dtype):
        ops.store_layer_weights(net, dtype)
    return net


def _others(spec: components.VariantSpec, dtype: torch.dtype) -> dict[str, nn.Module]:
    import open_clip

    vae_mod = library_module("vae")
    voc_mod = library_module("vocoder")
    sync_mod = library_module("features.synchformer")
    clip_mod = library_module("features.clip")
    with torch.device("meta"):
        parts: dict[str, nn.Module] = {
            "clip": clip_mod.ClipEncoder(open_clip.model.CLIP(**spec.clip_cfg)),
            "synchformer": sync_mod.SynchformerVisual(),
            "vae_decoder": vae_mod.VAE(spec.vae, with_encoder=False),
            "vocoder": voc_mod.BigVGAN(spec.vocoder),
        }
    return {name: module.to(dtype) for name, module in parts.items()}


def budget(variant: str, weights: str, others: str = "bf16") -> dict[str, Any]:
    """Weight bytes per component and per stage for ``weights`` (the network) and ``others`` (the rest)."""
    precision = library_module("weights.precision")
    spec = components.variant_spec(variant)
    dtype = precision.parse_dtype(weights)
    compute = precision.parse_dtype(others) if precision.is_fp8(dtype) else dtype
    network = _network(spec, dtype, compute)
    models = {"network": network, **_others(spec, precision.parse_dtype(others))}
    sizes = {name: _bytes(module) for name, module in models.items()}
    stages = {stage: sum(sizes[part] for part in parts) for stage, parts in STAGES.items()}
    streaming = library_module("model.block_streaming")
    streamed = {name: streaming.streaming_peak_bytes(module, 1) if streaming.can_stream(module) else sizes[name]
                for name, module in models.items()}
    low_vram = {stage: sum(streamed[part] for part in parts) for stage, parts in STAGES.items()}
    return {"variant": variant, "weights": weights, "others": others, "components": sizes, "stages": stages,
            "all_resident": sum(sizes.values()), "largest_stage": max(stages.values()),
            "low_vram_stages": low_vram, "low_vram_largest_stage": max(low_vram.values())}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="large_44k_v2", choices=components.VARIANT_NAMES[1:])
    p.add_argument("--weights", default="bf16,fp8_e4m3fn", help="network weights dtypes, comma-separated")
    p.add_argument("--others", default="bf16", help="dtype of CLIP, Synchformer, VAE and vocoder")
    args = p.parse_args(argv)
    for weights in args.weights.split(","):
        b = budget(args.variant, weights.strip(), args.others)
        print(f"{b['variant']}: network weights {b['weights']}, other models {b['others']}")
        for name, size in b["components"].items():
            print(f"  {name:12s} {size / GB:6.2f} GB")
        for stage, size in b["stages"].items():
            print(f"  stage {stage:10s} {size / GB:6.2f} GB")
        print(f"  all resident       {b['all_resident'] / GB:6.2f} GB")
        print(f"  largest stage      {b['largest_stage'] / GB:6.2f} GB")
        for stage, size in b["low_vram_stages"].items():
            print(f"  low-VRAM {stage:10s} {size / GB:6.2f} GB")
        print(f"  low-VRAM largest   {b['low_vram_largest_stage'] / GB:6.2f} GB\n")


if __name__ == "__main__":
    main()
