"""The memory estimates the models give a memory manager, against what a forward really takes on the CPU.

Each case runs in a fresh process and compares the growth of the peak RSS during one forward with the model's
estimate. The peak must be the forward's own, not the process's: the C allocator's freed-but-kept memory is handed
back first (``malloc_trim``; a fixed mmap threshold so large blocks are not kept at all), then the kernel's peak
counter is reset (``/proc/self/clear_refs``), or a forward that reuses memory freed while the model was built
shows no growth. The estimates must be within a factor of 3 either way: a
memory manager that is told a third of the truth runs out of memory, one told three times too much evicts models
for nothing. (The decoder's estimate is checked the same way in tests/test_decoder_chunked.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FACTOR = 3.0

_PROBE = textwrap.dedent("""
    import ctypes, json, sys, torch
    sys.path.insert(0, {repo!r})
    from bench.measure import HostMemory
    torch.set_num_threads(1)
    kind, batch = sys.argv[1], int(sys.argv[2])
    memory = HostMemory()
    if not memory.resettable:
        print(json.dumps({{"unmeasurable": memory.describe()}}))
        sys.exit(0)

    def start():
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        memory.reset_peak()
        return memory.current()

    def peak():
        return memory.peak()

    with torch.inference_mode():
        if kind == "network":
            from mmaudio.model import MMAudioNetwork, NetworkConfig, SequenceLengths
            from mmaudio.sampling import build_conditions, guided_velocity, initial_noise
            lengths = SequenceLengths.for_duration(8.0, "16k")
            config = NetworkConfig(name="probe", latent_dim=20, hidden_dim=448, depth=2, fused_depth=1, num_heads=7,
                                   mode="16k", latent_seq_len=lengths.latent_seq_len,
                                   clip_seq_len=lengths.clip_seq_len, sync_seq_len=lengths.sync_seq_len)
            net = MMAudioNetwork(config).eval().requires_grad_(False)
            cond, empty = build_conditions(net, clip_f=torch.randn(1, lengths.clip_seq_len, 1024),
                                           sync_f=torch.randn(1, lengths.sync_seq_len, 768),
                                           text_f=torch.randn(1, 77, 1024), batch_size=batch)
            x = initial_noise(0, batch, lengths.latent_seq_len, 20)
            velocity = guided_velocity(net, cond, empty, 4.5)
            estimate = net.activation_memory(2 * batch, lengths.latent_seq_len, lengths.clip_seq_len, torch.float32)
            before = start()
            velocity(torch.tensor(0.5), x)
        elif kind == "synchformer":
            from mmaudio.features.synchformer import SynchformerVisual
            model = SynchformerVisual(depth=1, dim=256).eval().requires_grad_(False)
            x = torch.randn(batch, 16, 3, 224, 224)
            estimate = model.memory_for_segments(batch, torch.float32)
            before = start()
            model(x)
        else:
            from mmaudio.features.clip import load_clip
            from tests.test_clip import TINY, tiny_checkpoint
            clip = load_clip(tiny_checkpoint(), config=TINY)
            x = torch.rand(batch, 3, 384, 384)
            estimate = clip.memory_for_images(batch)
            before = start()
            clip.encode_images(x)
        measured = peak() - before
    print(json.dumps({{"measured": measured, "estimate": estimate}}))
""")


@pytest.mark.parametrize("kind, batch", [("network", 1), ("network", 6), ("synchformer", 4), ("clip", 4)])
def test_estimate_is_within_a_factor_of_the_measured_peak(kind: str, batch: int) -> None:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    done = subprocess.run([sys.executable, "-c", _PROBE.format(repo=str(REPO)), kind, str(batch)],
                          capture_output=True, text=True, cwd=REPO, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if "unmeasurable" in figures:
        pytest.skip(f"no per-forward peak on this system: {figures['unmeasurable']}")
    ratio = figures["measured"] / figures["estimate"]
    assert 1 / FACTOR <= ratio <= FACTOR, figures
