"""Helpers the VAE and vocoder loaders share to check a state dict and explain a wrong one.

A user who picks the wrong file in a dropdown should read what the file actually is ("a BigVGAN vocoder",
"an MMAudio flow network"), not a PyTorch key dump. The description comes from the one checkpoint detector
(``mmaudio.weights.identify.describe_checkpoint``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..errors import WrongCheckpointError
from ..weights.identify import describe_checkpoint

Shape = tuple[int, ...]


def tensor_shapes(state_dict: Mapping[str, Any]) -> dict[str, Shape]:
    """Key -> shape of every tensor entry (non-tensor entries are ignored)."""
    return {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}


def describe_contents(state_dict: Mapping[str, Any]) -> str:
    """A short human description of what a state dict holds."""
    shapes = tensor_shapes(state_dict)
    non_tensors = sorted(k for k, v in state_dict.items() if not isinstance(v, torch.Tensor))
    text = describe_checkpoint(shapes) if shapes else "no tensors at all"
    if non_tensors:
        text += f" (plus non-tensor entries {non_tensors[:5]})"
    return text


def wrong_checkpoint(
    source: str, expected: str, state_dict: Mapping[str, Any], detail: str = ""
) -> WrongCheckpointError:
    """The error to raise when ``source`` is not the ``expected`` component (no ``detail``) or is that component
    but cannot be loaded (``detail`` says why: missing keys, wrong shapes, ...)."""
    contents = describe_contents(state_dict).strip().rstrip(".")
    if detail:
        message = f"{source} cannot be loaded as {expected}: {detail.strip().rstrip('.')}. What it holds: {contents}."
    else:
        message = f"{source} is not {expected}. What it holds: {contents}."
    return WrongCheckpointError(message)


def key_mismatch(expected: Mapping[str, Shape], found: Mapping[str, Shape], limit: int = 5) -> str:
    """A one-line account of missing, unexpected and wrongly shaped keys ('' when they match exactly)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[:limit]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:limit]})")
    if wrong:
        shown = ", ".join(f"{k}: {list(found[k])} instead of {list(expected[k])}" for k in wrong[:limit])
        parts.append(f"{len(wrong)} tensors with the wrong shape ({shown})")
    return "; ".join(parts)


def expected_shapes(module: torch.nn.Module) -> dict[str, Shape]:
    """Key -> shape of a module's state dict (works on the meta device)."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}
