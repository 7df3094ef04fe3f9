"""The optional torch.compile path of the sampler: same latents, a fallback when compiling fails, reuse."""

from __future__ import annotations

import logging

import pytest
import torch

from mmaudio.errors import InvalidInputError
from mmaudio.model import MMAudioNetwork
from mmaudio.model import compiled as compiled_module
from mmaudio.model.compiled import CompiledFlow, compile_mode, compiled_flow
from mmaudio.sampling import build_conditions, initial_noise, sample
from tests.parity.cases import rel_l2
from tests.tiny_network import LATENT_DIM, LENGTHS, random_features, tiny_network


def _generate(net: MMAudioNetwork, compile: str, steps: int = 3) -> torch.Tensor:
    with torch.no_grad():
        cond, empty = build_conditions(net, **random_features(5))
        x0 = initial_noise(1, 1, LENGTHS.latent_seq_len, LATENT_DIM)
        return sample(net, x0, cond, empty, num_steps=steps, cfg_strength=4.5, compile=compile)


def test_mode_names() -> None:
    assert compile_mode("off") is None
    assert compile_mode("compile") == "default"
    assert compile_mode("cuda_graphs") == "reduce-overhead"
    with pytest.raises(InvalidInputError, match=r"compile must be one of off, compile, cuda_graphs"):
        compile_mode("fast")


def test_off_is_the_plain_forward() -> None:
    net = tiny_network(depth=2)
    assert compiled_flow(net, "off") == net.predict_flow


def test_traced_forward_gives_the_same_latents(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dynamo traces the real forward (the "eager" backend runs the traced graph without generating code)."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend="eager", dynamic=False))
    net = tiny_network(depth=2)
    plain = _generate(net, "off")
    traced = _generate(net, "compile")
    flow = compiled_flow(net, "compile")
    assert isinstance(flow, CompiledFlow) and flow.failure is None
    assert rel_l2(traced, plain) < 1e-5
    assert compiled_flow(net, "compile") is flow  # kept for the next generation
    torch._dynamo.reset()


def test_a_failing_compiler_falls_back_once_with_a_warning(monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[int] = []

    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            attempts.append(1)
            raise RuntimeError("backend exploded\nmore detail")
        return run

    monkeypatch.setattr(compiled_module.torch, "compile", broken_compile)
    net = tiny_network(depth=2)
    plain = _generate(net, "off")
    with caplog.at_level(logging.WARNING, logger=compiled_module.__name__):
        first = _generate(net, "cuda_graphs")
        second = _generate(net, "cuda_graphs")
    assert torch.equal(first, plain) and torch.equal(second, plain)
    assert attempts == [1], "a failed compile must not be retried at every step"
    flow = compiled_flow(net, "cuda_graphs")
    assert flow.failure == "RuntimeError: backend exploded"
    assert [r.getMessage() for r in caplog.records].count(
        "MMAudio: torch.compile (mode reduce-overhead) failed, using the plain network: RuntimeError: backend "
        "exploded") == 1


def test_input_errors_are_not_taken_for_compile_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    def strict_compile(fn, **kwargs):
        def run(*args, **kw):
            raise InvalidInputError("latent must have shape ...")
        return run

    monkeypatch.setattr(compiled_module.torch, "compile", strict_compile)
    net = tiny_network(depth=2)
    flow = compiled_flow(net, "compile")
    with pytest.raises(InvalidInputError, match="latent must have shape"):
        flow(torch.zeros(1, 3, 8), torch.zeros(1), None)
    assert flow.failure is None


def test_inductor_compiles_the_real_forward() -> None:
    """The real default backend (C++ code generation on a CPU): about 45 s once, then the same latents."""
    net = tiny_network(depth=2)
    plain = _generate(net, "off")
    compiled = _generate(net, "compile")
    flow = compiled_flow(net, "compile")
    assert flow.failure is None, flow.failure
    assert rel_l2(compiled, plain) < 1e-5
    again = _generate(net, "compile")  # no recompilation: the device tables and shapes are unchanged
    assert torch.equal(again, compiled)
    torch._dynamo.reset()
