"""Block streaming (mmaudio/model/block_streaming.py): the network computes the same with its blocks brought to
the device one at a time, holds no more than the window it promises, and is left exactly as it was.

On the CPU the "device" copies are CPU tensors: they are told apart from the master tensors by identity. The
CUDA test at the end checks the same equality on a GPU and that the peak memory stays below the resident size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mmaudio.errors import InvalidInputError
from mmaudio.model import MMAudioNetwork
from mmaudio.model.block_streaming import stream_blocks, streamed_blocks, streaming_peak_bytes
from mmaudio.ops import store_layer_weights
from mmaudio.sampling import build_conditions, initial_noise, sample
from tests.tiny_network import LATENT_DIM, LENGTHS, random_features, tiny_network


def _flow(net: MMAudioNetwork, features: dict[str, torch.Tensor], device: torch.device | str = "cpu",
          ) -> torch.Tensor:
    """One guided-branch velocity of the network (conditions projected inside, like a sampler's first step)."""
    with torch.no_grad():
        on_device = {name: value.to(device) for name, value in features.items()}
        cond, _ = build_conditions(net, **on_device)
        latent = initial_noise(5, cond.batch_size, LENGTHS.latent_seq_len, LATENT_DIM, device=device)
        return net.predict_flow(latent, torch.tensor(0.3, device=device), cond)


def _sample(net: MMAudioNetwork, features: dict[str, torch.Tensor], device: torch.device | str = "cpu",
            ) -> torch.Tensor:
    with torch.no_grad():
        cond, empty = build_conditions(net, **{name: value.to(device) for name, value in features.items()})
        x0 = initial_noise(7, cond.batch_size, LENGTHS.latent_seq_len, LATENT_DIM, device=device)
        return sample(net, x0, cond, empty, num_steps=3, cfg_strength=4.5)


def _entries(net: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer object of ``net`` by name (the objects themselves, not detached views)."""
    return dict(net.state_dict(keep_vars=True))


def _assert_as_before(net: nn.Module, before: dict[str, torch.Tensor], values: dict[str, torch.Tensor]) -> None:
    after = _entries(net)
    assert after.keys() == before.keys()
    for name, tensor in after.items():
        assert tensor is before[name], f"{name} is not the original tensor"
        assert tensor.dtype == values[name].dtype and tensor.device == values[name].device
        assert torch.equal(tensor.float(), values[name].float()), f"{name} changed"
    for module in net.modules():
        assert not module._forward_pre_hooks and not module._forward_hooks, f"hooks left on {type(module)}"


def _snapshot(net: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    entries = _entries(net)
    return entries, {name: t.detach().clone() for name, t in entries.items()}


# ---- same results ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefetch", [0, 1, 2, 10])
def test_velocity_is_bit_identical(prefetch: int) -> None:
    net = tiny_network()
    features = random_features(1, batch=2)
    plain = _flow(net, features)
    with stream_blocks(net, "cpu", prefetch=prefetch):
        streamed = _flow(net, features)
    assert torch.equal(streamed, plain)


def test_velocity_is_bit_identical_under_inference_mode() -> None:
    """ComfyUI runs its nodes under inference mode: the copies are inference tensors there."""
    net = tiny_network()
    features = random_features(1)
    with torch.inference_mode():
        plain = _flow(net, features)
        with stream_blocks(net, "cpu"):
            streamed = _flow(net, features)
    assert torch.equal(streamed, plain)


def test_sampled_latents_are_bit_identical() -> None:
    net = tiny_network()
    features = random_features(2, batch=2)
    plain = _sample(net, features)
    with stream_blocks(net, "cpu"):
        streamed = _sample(net, features)
    assert torch.equal(streamed, plain)


@pytest.mark.parametrize("storage", [torch.bfloat16, torch.float8_e4m3fn])
def test_narrow_stored_weights_are_copied_as_stored(storage: torch.dtype) -> None:
    net = tiny_network()
    store_layer_weights(net, storage)
    features = random_features(3)
    plain = _flow(net, features)
    block = streamed_blocks(net)[0]
    stored = {name: p.dtype for name, p in block.named_parameters()}
    assert stored["latent_block.attn.qkv.weight"] == storage
    seen: list[dict[str, torch.dtype]] = []
    with stream_blocks(net, "cpu"):
        hook = block.register_forward_pre_hook(
            lambda module, _args: seen.append({name: p.dtype for name, p in module.named_parameters()}))
        streamed = _flow(net, features)
        hook.remove()
    assert seen == [stored]  # the copies the block computed with: every dtype as stored, nothing upcast
    assert torch.equal(streamed, plain)
    assert {name: p.dtype for name, p in block.named_parameters()} == stored


# ---- CLIP (the other large model of the low-VRAM mode) ---------------------------------------------------------
def test_clip_streams_its_image_and_text_blocks_with_identical_features() -> None:
    """CLIP names its image tower's blocks, then its text tower's; each block computes with a copy (not its
    master), the features are bit-identical, and the encoder is left exactly as it was."""
    from mmaudio.features.clip import load_clip
    from tests.test_clip import TINY, tiny_checkpoint

    clip = load_clip(tiny_checkpoint(), config=TINY)
    frames = torch.rand(3, 3, 378, 378, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        images, text = clip.encode_images(frames), clip.encode_text(["rain", "a dog barks"])
    blocks = streamed_blocks(clip)
    assert blocks == [*clip.model.visual.transformer.resblocks, *clip.model.transformer.resblocks]
    before, values = _snapshot(clip)
    masters = {id(t) for t in before.values()}
    ran_with_copies: list[bool] = []
    with torch.no_grad(), stream_blocks(clip, "cpu"):
        hooks = [block.register_forward_pre_hook(
            lambda module, _args: ran_with_copies.append(all(id(p) not in masters for p in module.parameters())))
            for block in blocks]
        streamed_images, streamed_text = clip.encode_images(frames), clip.encode_text(["rain", "a dog barks"])
        for hook in hooks:
            hook.remove()
    assert ran_with_copies == [True] * len(blocks)
    assert torch.equal(streamed_images, images) and torch.equal(streamed_text, text)
    _assert_as_before(clip, before, values)
    per_block = sorted(_bytes(list(block.parameters())) for block in blocks)
    outside = _bytes([*clip.parameters(), *clip.buffers()]) - sum(per_block)  # non-persistent buffers too
    assert streaming_peak_bytes(clip, 1) == outside + sum(per_block[-2:])


# ---- what is on the device ---------------------------------------------------------------------------------
@pytest.mark.parametrize("prefetch", [0, 1, 2])
def test_only_the_running_block_and_its_prefetch_window_are_on_the_device(prefetch: int) -> None:
    net = tiny_network(depth=4)
    blocks = streamed_blocks(net)
    masters = {id(t) for t in _entries(net).values()}
    records: list[tuple[int, list[int], list[str]]] = []

    def holds(block: nn.Module) -> str:
        copies = [id(p) not in masters for p in block.parameters()]
        return "copies" if all(copies) else "masters" if not any(copies) else "mixed"

    def record(index: int) -> None:
        records.append((index, streamer.resident_blocks(), [holds(block) for block in blocks]))

    after: list[tuple[int, list[int]]] = []
    with stream_blocks(net, "cpu", prefetch=prefetch) as streamer:
        hooks = [block.register_forward_pre_hook(lambda _m, _a, i=i: record(i)) for i, block in enumerate(blocks)]
        hooks += [block.register_forward_hook(lambda _m, _a, _o, i=i: after.append((i, streamer.resident_blocks())))
                  for i, block in enumerate(blocks)]
        assert all(id(p) not in masters for p in net.final_layer.parameters())  # the rest is resident
        assert net.device == torch.device("cpu")
        _flow(net, random_features(4))
        between_steps = streamer.resident_blocks(), [holds(block) for block in blocks]
        transfers = streamer.transfers
        for hook in hooks:
            hook.remove()

    n = len(blocks)
    assert [index for index, _, _ in records] == list(range(n))
    for index, resident, held in records:
        assert resident == sorted((index + ahead) % n for ahead in range(prefetch + 1))
        assert held == ["copies" if i == index else "masters" for i in range(n)]  # only the running block's copy
    for index, resident in after:  # a block is dropped as soon as it ran
        assert resident == sorted((index + ahead) % n for ahead in range(1, prefetch + 1))
    assert between_steps == (list(range(prefetch)), ["masters"] * n)  # the next step's first blocks, prefetched
    assert transfers == n + prefetch  # every block copied once, plus the next step's first blocks


def test_copies_hold_the_masters_values() -> None:
    net = tiny_network()
    block = streamed_blocks(net)[1]
    masters = {name: p for name, p in block.named_parameters()}
    checked: list[str] = []

    def compare(module: nn.Module, _args: object) -> None:
        for name, p in module.named_parameters():
            assert p is not masters[name] and p.data_ptr() != masters[name].data_ptr()
            assert p.dtype == masters[name].dtype and torch.equal(p, masters[name])
            checked.append(name)

    with stream_blocks(net, "cpu"):
        hook = block.register_forward_pre_hook(compare)
        _flow(net, random_features(5))
        hook.remove()
    assert sorted(checked) == sorted(masters)


# ---- ordering with a side stream (fake streams: this machine has no GPU) -----------------------------------
class _FakeEvent:
    def __init__(self, number: int) -> None:
        self.number = number


class _FakeStream:
    """Records what block streaming asks of the streams, in order, into a shared log."""

    def __init__(self, log: list[tuple], name: str) -> None:
        self.log, self.name, self.events = log, name, 0

    def wait_stream(self, other: _FakeStream) -> None:
        self.log.append((self.name, "wait_stream", other.name))

    def record_event(self) -> _FakeEvent:
        self.events += 1
        self.log.append((self.name, "record", self.events))
        return _FakeEvent(self.events)

    def wait_event(self, event: _FakeEvent) -> None:
        self.log.append((self.name, "wait", event.number))

    def synchronize(self) -> None:
        self.log.append((self.name, "synchronize"))

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        self.log.append((self.name, "enter"))
        yield
        self.log.append((self.name, "exit"))


def _with_fake_streams(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """A stand-in for ``torch.cuda``'s stream API, used for the CPU "device"."""
    import mmaudio.model.block_streaming as streaming

    log: list[tuple] = []
    compute = _FakeStream(log, "compute")
    backend = SimpleNamespace(Stream=lambda device: _FakeStream(log, "side"), current_stream=lambda device: compute,
                              stream=lambda stream: stream.current())
    monkeypatch.setattr(streaming, "_stream_backend", lambda device: backend)
    return log


def test_each_block_waits_for_its_copy_on_the_side_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    log = _with_fake_streams(monkeypatch)
    net = tiny_network(depth=4)
    blocks = streamed_blocks(net)
    plain = _flow(net, random_features(10))
    with stream_blocks(net, "cpu", prefetch=1, pin_memory=False):
        hooks = [block.register_forward_pre_hook(lambda _m, _a, i=i: log.append(("run", i)))
                 for i, block in enumerate(blocks)]
        assert torch.equal(_flow(net, random_features(10)), plain)
        for hook in hooks:
            hook.remove()
    copies = [i for i, entry in enumerate(log) if entry[:2] == ("side", "record")]
    assert len(copies) == len(blocks) + 1
    for at in copies:  # each copy: the side stream waits for compute issued so far, then copies inside its context
        assert log[at - 3:at] == [("side", "wait_stream", "compute"), ("side", "enter"), ("side", "exit")]
    runs = [i for i, entry in enumerate(log) if entry[0] == "run"]
    for block, at in enumerate(runs):  # the n-th recorded copy is block n's (the last one: block 0 of a next step)
        assert ("compute", "wait", block + 1) in log[copies[block]:at], f"block {block} ran before its copy"
    assert log[-1] == ("side", "synchronize")
    waited = {entry[2] for entry in log if entry[:2] == ("compute", "wait")}
    assert waited == set(range(1, len(copies) + 1))  # the prefetched, never used copy too, before it was freed


# ---- left as it was ----------------------------------------------------------------------------------------
def test_normal_exit_restores_the_network() -> None:
    net = tiny_network()
    before, values = _snapshot(net)
    plain = _flow(net, random_features(6))
    with stream_blocks(net, "cpu"):
        _flow(net, random_features(6))
    _assert_as_before(net, before, values)
    assert torch.equal(_flow(net, random_features(6)), plain)


class _StopError(Exception):
    pass


@pytest.mark.parametrize("raised", [_StopError, KeyboardInterrupt])
@pytest.mark.parametrize("where", ["before_block", "inside_block"])
def test_exit_by_exception_restores_the_network(raised: type[BaseException], where: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    net = tiny_network()
    before, values = _snapshot(net)
    plain = _flow(net, random_features(7))
    block = streamed_blocks(net)[1]

    def fail(*_args: object, **_kwargs: object) -> None:
        raise raised("stopped")

    with pytest.raises(raised), stream_blocks(net, "cpu") as streamer:
        handle = None
        if where == "before_block":
            handle = block.register_forward_pre_hook(fail)  # runs after ours: the block holds its copy
        else:
            monkeypatch.setattr(block, "forward", fail)
        try:
            _flow(net, random_features(7))
        finally:
            if handle is not None:
                handle.remove()
            monkeypatch.undo()
            assert streamer.resident_blocks()  # something really was on the device when it stopped
    _assert_as_before(net, before, values)
    assert torch.equal(_flow(net, random_features(7)), plain)
    with stream_blocks(net, "cpu"):  # and it can be streamed again
        assert torch.equal(_flow(net, random_features(7)), plain)


def test_nested_streaming_is_refused_and_leaves_the_outer_context_intact() -> None:
    net = tiny_network()
    plain = _flow(net, random_features(8))
    with stream_blocks(net, "cpu"):
        with pytest.raises(InvalidInputError, match="already being streamed"), stream_blocks(net, "cpu"):
            pass
        assert torch.equal(_flow(net, random_features(8)), plain)


def test_bad_arguments_are_refused() -> None:
    net = tiny_network()
    with pytest.raises(InvalidInputError, match="prefetch must be a non-negative integer"), \
            stream_blocks(net, "cpu", prefetch=-1):
        pass
    with pytest.raises(InvalidInputError, match="Linear names no blocks to stream"):
        streaming_peak_bytes(nn.Linear(2, 2))
    assert not any(module._forward_pre_hooks for module in net.modules())


# ---- memory estimate ---------------------------------------------------------------------------------------
def _bytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("storage", [None, torch.float8_e4m3fn])
@pytest.mark.parametrize("prefetch", [0, 1, 2, 10])
def test_peak_bytes_are_the_resident_part_plus_the_largest_window(prefetch: int, storage: torch.dtype | None,
                                                                  ) -> None:
    net = tiny_network(depth=4)
    if storage is not None:
        store_layer_weights(net, storage)
    entries = _entries(net)
    in_blocks = ("joint_blocks.", "fused_blocks.")
    outside = _bytes([t for name, t in entries.items() if not name.startswith(in_blocks)])
    per_block = sorted(_bytes(list(block.parameters())) for block in [*net.joint_blocks, *net.fused_blocks])
    assert len(set(per_block)) > 1  # the last joint block is smaller: "largest" matters
    window = per_block[-min(prefetch + 1, len(per_block)):]
    assert streaming_peak_bytes(net, prefetch) == outside + sum(window)
    assert outside + sum(per_block) == _bytes(list(entries.values()))  # nothing counted twice or missed


# ---- on a GPU --------------------------------------------------------------------------------------------------
def _wider_network() -> MMAudioNetwork:
    """Blocks that dominate the weights (as in the real variants), with the tiny network's feature shapes."""
    config = tiny_network().config.replace(name="wider", hidden_dim=256, num_heads=4, depth=12, fused_depth=8)
    torch.manual_seed(0)
    net = MMAudioNetwork(config).eval()
    with torch.no_grad():
        for param in net.parameters():
            param.normal_(0.0, 0.05)
    return net


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_streaming_equals_the_resident_network_below_its_memory() -> None:
    net = _wider_network()
    features = random_features(9, batch=2)
    resident_bytes = _bytes(list(_entries(net).values()))
    resident = MMAudioNetwork(net.config).eval()
    resident.load_state_dict(net.state_dict())
    resident.to("cuda")
    expected_flow = _flow(resident, features, "cuda").cpu()
    expected_latents = _sample(resident, features, "cuda").cpu()
    del resident
    torch.cuda.synchronize()
    torch.cuda.empty_cache()

    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with stream_blocks(net, "cuda", prefetch=1):
        flow = _flow(net, features, "cuda")
        latents = _sample(net, features, "cuda")
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    assert torch.equal(flow.cpu(), expected_flow) and torch.equal(latents.cpu(), expected_latents)
    assert all(t.device.type == "cpu" for t in _entries(net).values())
    assert streaming_peak_bytes(net, 1) < resident_bytes / 2
    assert peak < resident_bytes, f"peak {peak} B, resident weights {resident_bytes} B"
    del flow, latents
    assert torch.cuda.memory_allocated() == base  # nothing of the context is left on the GPU


# ---- with the engine -----------------------------------------------------------------------------------------
def test_the_engine_refuses_to_compile_a_streamed_network() -> None:
    """A compiled forward would capture one set of block copies: the engine says so instead of compiling, and
    leaves the network as it was (no hooks, its own tensors)."""
    from mmaudio import engine
    from mmaudio.engine.windows import plan_windows
    from tests.test_engine_windows import conditions_for
    from tests.test_engine_windows import tiny_network as tiny_engine_network

    net = tiny_engine_network()
    before, values = _snapshot(net)
    placed = engine.Placed(net, torch.device("cpu"), torch.float32)
    settings = engine.SamplingSettings(seed=1, steps=2, compile="compile")
    with pytest.raises(InvalidInputError, match=r"compile='compile': the network's blocks are streamed"):
        engine.sample_latents(placed, conditions_for(plan_windows(1.0, "16k"), video=False), settings,
                              engine.DirectRuntime("cpu", low_vram=True))
    _assert_as_before(net, before, values)
