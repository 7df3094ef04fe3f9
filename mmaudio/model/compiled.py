"""Optional ``torch.compile`` of the flow network's forward, with CUDA graphs on request.

Why optional: compiling takes a minute or more on first use (and again for every new duration or batch size),
it needs a working compiler toolchain (Triton on a GPU, a C++ compiler on a CPU), and on a CPU it gains
nothing measurable (see docs/PERFORMANCE.md). Where it fails, generation carries on with the plain forward and
says so once, instead of failing a run that would otherwise work.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError

log = logging.getLogger(__name__)

# User-facing names to torch.compile modes.
COMPILE_MODES: dict[str, str | None] = {
    "off": None,
    "compile": "default",
    "cuda_graphs": "reduce-overhead",  # CUDA graphs: least launch overhead per step, static shapes
}


def compile_mode(name: str) -> str | None:
    """The torch.compile mode of a user-facing name ("off", "compile", "cuda_graphs")."""
    if name not in COMPILE_MODES:
        raise InvalidInputError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {name!r}")
    return COMPILE_MODES[name]


class CompiledFlow:
    """``net.predict_flow`` through torch.compile, falling back to the plain forward if compiling fails.

    Errors of the inputs are not compile failures: the plain forward runs and raises them as it would.
    """

    def __init__(self, net: nn.Module, mode: str) -> None:
        self._net = net
        self.mode = mode
        self._compiled = torch.compile(net.predict_flow, mode=mode, dynamic=False)
        self.failure: str | None = None

    def __call__(self, latent: torch.Tensor, t: torch.Tensor, conditions: Any, *, branches: int = 1) -> torch.Tensor:
        if self.failure is None:
            try:
                return self._compiled(latent, t, conditions, branches=branches)
            except InvalidInputError:
                raise
            except Exception as error:  # a backend or tracing failure: keep generating without it
                message = str(error).strip()
                self.failure = f"{type(error).__name__}: {message.splitlines()[0][:300] if message else ''}"
                log.warning("MMAudio: torch.compile (mode %s) failed, using the plain network: %s",
                            self.mode, self.failure)
        return self._net.predict_flow(latent, t, conditions, branches=branches)


def compiled_flow(net: nn.Module, name: str) -> Any:
    """The forward to sample with for the user-facing ``name``: the plain ``predict_flow`` for "off", else a
    :class:`CompiledFlow` kept on the network so later generations reuse what was compiled."""
    mode = compile_mode(name)
    if mode is None:
        return net.predict_flow
    cache: dict[str, CompiledFlow] = net.__dict__.setdefault("_compiled_flows", {})  # not a module attribute
    if mode not in cache:
        cache[mode] = CompiledFlow(net, mode)
    return cache[mode]
