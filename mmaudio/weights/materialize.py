"""Building big modules without allocating random weights, then filling them from a state dict.

A module built under ``torch.device("meta")`` has shapes but no storage; ``load_state_dict(assign=True)`` then
adopts the checkpoint's tensors as they are (dtype and device included) instead of copying them into freshly
initialised float32 parameters, so a 4 GB network never exists twice in memory. Buffers that the module
computes (rotary tables, frequencies, filters) are not in the state dict; modules recompute them in float32 in
``rebuild_buffers()``, which :func:`load_into` calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from torch import nn

from ..errors import WrongCheckpointError

M = TypeVar("M", bound=nn.Module)


def instantiate_on_meta(factory: Callable[[], M]) -> M:
    """``factory()`` with every parameter and buffer on the meta device (no memory, no random init)."""
    with torch.device("meta"):
        return factory()


def _sample(items: list[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def _rebuild(module: nn.Module) -> None:
    """Call ``rebuild_buffers()`` on ``module`` if it has one, else on its outermost submodules that do."""
    if callable(getattr(module, "rebuild_buffers", None)):
        module.rebuild_buffers()
        return
    for child in module.children():
        _rebuild(child)


def load_into(module: M, state_dict: Mapping[str, torch.Tensor], *, strict: bool = True, source: str = "") -> M:
    """Assign ``state_dict``'s tensors to ``module`` (built on meta or not), rebuild computed buffers, check.

    Raises :class:`~mmaudio.errors.WrongCheckpointError` naming the missing, unexpected or mismatched tensors
    (``source`` names the file in the message), and if any parameter or buffer is still on the meta device
    afterwards.
    """
    what = f"'{source}'" if source else "the weights"
    target = type(module).__name__
    expected = module.state_dict(keep_vars=True)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {list(state_dict[k].shape)} (module has {list(expected[k].shape)})"
        for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} tensors have other shapes: {_sample(mismatched)}")
    if strict and missing:
        problems.append(f"{len(missing)} tensors are missing: {_sample(missing)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} tensors are not part of the model: {_sample(unexpected)}")
    if problems:
        raise WrongCheckpointError(f"{what} does not fit {target}: " + "; ".join(problems))

    module.load_state_dict(dict(state_dict), strict=strict, assign=True)
    _rebuild(module)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise WrongCheckpointError(
            f"{what} left {len(left)} tensors of {target} without values ({_sample(left)}); the file lacks them "
            "and the module does not compute them"
        )
    return module
