"""Where one sampler step spends its time: torch.profiler over one guided velocity evaluation.

    python bench/profile_step.py --variant small_16k --threads 2
    python bench/profile_step.py --variant small_16k --reference /path/to/MMAudio --threads 1 --rows 25

Profiles our guided velocity (both guidance branches in one batched forward, and as two passes) and, with
``--reference``, the reference's ``ode_wrapper`` on the same weights and inputs. Prints the operators with the
largest self time, the time per module kind (attention, adaLN, MLPs, ...), and an estimate of the arithmetic
(multiply-adds) of one step, so the measured time can be read against the machine's peak.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from bench import components
from bench.library import library_module, load_reference
from bench.reference import build_reference_network


def step_macs(cfg: Any, latent: int, clip: int, text: int) -> dict[str, float]:
    """Multiply-adds of one network forward for one sample, by part (weights' layers and attention)."""
    d = cfg.hidden_dim
    ffn = 3 * d * library_module("model.config").swiglu_hidden_dim(int(d * cfg.mlp_ratio))
    wide = 3 * d * library_module("model.config").swiglu_hidden_dim(d * 4)
    joint, fused = cfg.num_joint_blocks, cfg.fused_depth
    blocks = joint + fused
    parts = {
        "latent qkv + out (conv k3)": latent * blocks * (3 * d * d + 3 * d * d),
        "latent MLP (conv k3)": latent * blocks * 3 * ffn,
        "latent adaLN (per token)": latent * blocks * 6 * d * d,
        "clip stream": clip * ((joint - 1) * (3 * d * d + 3 * d * d + 3 * ffn) + 3 * d * d),
        "text stream": text * ((joint - 1) * (3 * d * d + d * d + ffn) + 3 * d * d),
        "attention (QK^T and AV)": joint * 2 * (latent + clip + text) ** 2 * d + fused * 2 * latent**2 * d,
        "audio input projection (conv k7)": latent * (7 * cfg.latent_dim * d + 7 * wide),
        "final layer (conv k7)": latent * 7 * d * cfg.latent_dim,
    }
    return {k: float(v) for k, v in parts.items()}


def _kind(name: str) -> str | None:
    """Coarse module kind of a record_function label set by :func:`_label_modules`."""
    return name[len("mod:"):] if name.startswith("mod:") else None


def _label_modules(net: torch.nn.Module) -> list[Any]:
    """Wrap the forward of interesting submodules in record_function ranges, by kind; returns the handles."""
    handles = []

    def kind_of(name: str) -> str | None:
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("ffn", "mlp") or (leaf == "2" and "input_proj" in name):
            return "MLP (SwiGLU)"
        if leaf == "adaLN_modulation":
            return "adaLN"
        if leaf in ("qkv",):
            return "qkv projection"
        if leaf in ("linear1",):
            return "attention out projection"
        if leaf in ("q_norm", "k_norm"):
            return "q/k RMS norm"
        if leaf in ("norm1", "norm2", "norm"):
            return "LayerNorm"
        return None

    for name, module in net.named_modules():
        kind = kind_of(name)
        if kind is None:
            continue
        ctx: dict[int, Any] = {}

        def pre(_m: Any, _a: Any, kind: str = kind, ctx: dict[int, Any] = ctx) -> None:
            ctx[0] = record_function(f"mod:{kind}")
            ctx[0].__enter__()

        def post(_m: Any, _a: Any, _o: Any, ctx: dict[int, Any] = ctx) -> None:
            ctx.pop(0).__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return handles


def _profile(fn: Any, label: str, rows: int) -> None:
    fn()  # warm
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    by_kind: dict[str, float] = defaultdict(float)
    for e in events:
        kind = _kind(e.key)
        if kind is not None:
            by_kind[kind] += e.cpu_time_total / 1e6
    print(f"\n=== {label}: {wall:.3f} s per step unprofiled, {total:.3f} s self time under the profiler ===")
    print(events.table(sort_by="self_cpu_time_total", row_limit=rows))
    print("time inside module kinds (inclusive, s):")
    for kind, seconds in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:28s} {seconds:8.3f}  ({100 * seconds / total:5.1f}%)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="small_16k", choices=components.VARIANT_NAMES)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--reference", type=Path, default=None)
    p.add_argument("--rows", type=int, default=20)
    p.add_argument("--no-modules", action="store_true", help="no per-module ranges (they add a little overhead)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sampling = library_module("sampling")
    spec = components.variant_spec(args.variant)
    device = torch.device("cpu")
    state_dict = components.network_state_dict(spec, 0)
    net = components.build_network(state_dict, torch.float32, device)
    lengths = net.set_duration(args.duration, spec.mode)
    gen = torch.Generator().manual_seed(1)
    cfg = spec.network
    clip_f = torch.randn(1, lengths.clip_seq_len, cfg.clip_dim, generator=gen)
    sync_f = torch.randn(1, lengths.sync_seq_len, cfg.sync_dim, generator=gen)
    text_f = torch.randn(1, cfg.text_seq_len, cfg.text_dim, generator=gen)
    x = torch.randn(1, lengths.latent_seq_len, cfg.latent_dim, generator=gen)
    t = torch.tensor(0.4)
    macs = step_macs(cfg, lengths.latent_seq_len, lengths.clip_seq_len, cfg.text_seq_len)
    total = sum(macs.values())
    print(f"{args.variant}, {args.duration:g} s, {torch.get_num_threads()} threads: one forward of one sample "
          f"is ~{total / 1e9:.1f} G multiply-adds; a guided step (2 samples) ~{4 * total / 1e9:.0f} GFLOP")
    for part, value in sorted(macs.items(), key=lambda kv: -kv[1]):
        print(f"  {part:34s} {value / 1e9:7.2f} GMAC ({100 * value / total:4.1f}%)")
    handles = [] if args.no_modules else _label_modules(net)
    winograd = library_module("model.winograd")
    # Our forwards with the fast path the engine's sampling stage enters (Winograd F(4, 3) on a CPU in float32).
    with torch.inference_mode(), winograd.fast_path_for(net, device, torch.float32):
        cond, empty = sampling.build_conditions(net, clip_f=clip_f, sync_f=sync_f, text_f=text_f)
        batched = sampling.guided_velocity(net, cond, empty, 4.5, batched=True)
        two_pass = sampling.guided_velocity(net, cond, empty, 4.5, batched=False)
        _profile(lambda: batched(t, x), "ours, batched guidance", args.rows)
        _profile(lambda: two_pass(t, x), "ours, two passes", args.rows)
        if args.reference is not None:
            ref = load_reference(args.reference)
            ref_net = build_reference_network(ref, spec, state_dict, lengths, device, torch.float32)
            if not args.no_modules:
                _label_modules(ref_net)
            rc = ref_net.preprocess_conditions(clip_f, sync_f, text_f)
            re_ = ref_net.get_empty_conditions(1)
            _profile(lambda: ref_net.ode_wrapper(t, x, rc, re_, 4.5), "reference (two passes)", args.rows)
    for h in handles:
        h.remove()


if __name__ == "__main__":
    main()
