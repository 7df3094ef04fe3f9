"""The deterministic weight rule of the Synchformer and CLIP golden cases (README-ext.md).

For every key of the real checkpoint, in sorted order: a fresh CPU generator seeded with crc32(key) draws
``randn(shape) * 0.02`` in float32. The ``ln1`` variant adds 1.0 to every 1-D ``*.weight`` (the LayerNorm gains)
so activations reach their non-linear range. The cases carry a sha256 over the sorted keys and float32 bytes,
which :func:`rule_state_dict` recomputes while generating, so a wrong rule fails before any model runs.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch

VARIANTS = ("plain", "ln1")


def rule_tensor(key: str, shape: Sequence[int], variant: str = "plain") -> torch.Tensor:
    """The rule's float32 tensor for one key."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown rule variant {variant!r}; expected one of {VARIANTS}")
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    value = torch.randn(tuple(shape), generator=gen, dtype=torch.float32) * 0.02
    if variant == "ln1" and len(shape) == 1 and key.endswith(".weight"):
        value = 1.0 + value
    return value


def key_shapes(weights_spec: Mapping[str, Any]) -> dict[str, list[int]]:
    """Key -> shape from a case's ``weights.fingerprint.keys`` table."""
    table = weights_spec["fingerprint"]["keys"]
    return {key: list(entry["shape"]) for key, entry in table.items()}


def expected_sha256(weights_spec: Mapping[str, Any], variant: str) -> str:
    if variant == "plain":
        return str(weights_spec["fingerprint"]["sha256_over_sorted_key_and_float32_bytes"])
    return str(weights_spec["fingerprint_ln1_sha256"])


def _hash_update(digest: Any, key: str, tensor: torch.Tensor) -> None:
    digest.update(key.encode("utf-8"))
    digest.update(tensor.detach().to("cpu", torch.float32).contiguous().reshape(-1).numpy())


def fingerprint_sha256(sd: Mapping[str, torch.Tensor]) -> str:
    """sha256 over each key (sorted) followed by its little-endian float32 bytes."""
    digest = hashlib.sha256()
    for key in sorted(sd):
        _hash_update(digest, key, sd[key])
    return digest.hexdigest()


def rule_state_dict(shapes: Mapping[str, Sequence[int]], variant: str = "plain") -> tuple[dict[str, torch.Tensor], str]:
    """All rule tensors and their fingerprint, hashed while generating (no second pass over ~4 GB)."""
    digest = hashlib.sha256()
    sd: dict[str, torch.Tensor] = {}
    for key in sorted(shapes):
        tensor = rule_tensor(key, shapes[key], variant)
        _hash_update(digest, key, tensor)
        sd[key] = tensor
    return sd, digest.hexdigest()


def verified_rule_state_dict(weights_spec: Mapping[str, Any], variant: str, what: str) -> dict[str, torch.Tensor]:
    """The rule state dict for a case, after checking its sha256 and per-key sums against the case JSON."""
    shapes = key_shapes(weights_spec)
    sd, sha = rule_state_dict(shapes, variant)
    want = expected_sha256(weights_spec, variant)
    if sha != want:
        raise AssertionError(f"{what}: rule weights ({variant}) fingerprint {sha} != case fingerprint {want}")
    if variant == "plain":
        for key, entry in weights_spec["fingerprint"]["keys"].items():
            tensor = sd[key]
            first = float(tensor.reshape(-1)[0]) if tensor.numel() else None
            if first is not None and first != float(entry["first"]):
                raise AssertionError(f"{what}: rule tensor {key} starts with {first}, case says {entry['first']}")
    return sd
