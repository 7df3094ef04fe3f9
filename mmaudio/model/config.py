"""Hyperparameters of the flow network and the five published variants.

A :class:`NetworkConfig` says everything needed to build a network whose state_dict matches a checkpoint; the
variant tables follow the published checkpoints (their manifests list every key and shape).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..modes import MODES
from .sequence_config import SequenceLengths

# The published networks were trained at 8 s; they are built with that duration's sequence lengths.
TRAINING_DURATION_S = 8.0
TEXT_SEQ_LEN = 77


def swiglu_hidden_dim(nominal_hidden: int, multiple_of: int = 256) -> int:
    """Real hidden width of a SwiGLU (Conv)MLP of nominal width ``dim * ratio``: two thirds, rounded up."""
    hidden = int(2 * nominal_hidden / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass(frozen=True, kw_only=True)
class NetworkConfig:
    """Architecture and current sequence lengths of one flow network.

    ``mode`` ("16k" or "44k") pairs the network with its VAE/vocoder and sequence-length rules; it is ``None``
    for a custom network whose latent size fits neither published autoencoder.
    """

    name: str = "custom"
    latent_dim: int
    clip_dim: int = 1024
    sync_dim: int = 768
    text_dim: int = 1024
    hidden_dim: int
    depth: int
    fused_depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    v2: bool = False
    mode: str | None = "44k"
    latent_seq_len: int
    clip_seq_len: int = 64
    sync_seq_len: int = 192
    text_seq_len: int = TEXT_SEQ_LEN

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)} or None, got {self.mode!r}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for the rotary embedding")
        if not 0 <= self.fused_depth <= self.depth:
            raise ValueError(f"fused_depth {self.fused_depth} must lie in [0, depth={self.depth}]")
        if self.sync_seq_len % 8:
            raise ValueError(f"sync_seq_len {self.sync_seq_len} must be a multiple of 8 (8 tokens per segment)")

    # ---- derived sizes -------------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads

    @property
    def num_joint_blocks(self) -> int:
        return self.depth - self.fused_depth

    @property
    def timestep_frequency_dim(self) -> int:
        """Sinusoid channels of the timestep embedding: hidden_dim in v2, 256 in v1."""
        return self.hidden_dim if self.v2 else 256

    @property
    def timestep_max_period(self) -> float:
        return 1.0 if self.v2 else 10000.0

    @property
    def sample_rate(self) -> int | None:
        return MODES[self.mode].sample_rate if self.mode else None

    # ---- construction helpers ------------------------------------------------------------------------------
    def architecture(self) -> dict[str, Any]:
        """The fields that decide the state_dict (everything but name, mode and sequence lengths)."""
        skip = {"name", "mode", "latent_seq_len", "clip_seq_len", "sync_seq_len"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}

    def with_lengths(self, lengths: SequenceLengths) -> NetworkConfig:
        return dataclasses.replace(self, latent_seq_len=lengths.latent_seq_len, clip_seq_len=lengths.clip_seq_len,
                                   sync_seq_len=lengths.sync_seq_len)

    def replace(self, **changes: Any) -> NetworkConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_constructor(cls, constructor: Mapping[str, Any], *, name: str = "custom",
                         mode: str | None = None) -> NetworkConfig:
        """Build from the reference constructor's keyword arguments (as the manifests and fixtures list them).

        Tensor-valued arguments of the reference (latent_mean, latent_std, empty_string_feat) come from the
        checkpoint and are ignored here.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in constructor.items() if k in fields}
        return cls(name=name, mode=mode, **kwargs)


def _published(name: str, *, latent_dim: int, hidden_dim: int, depth: int, fused_depth: int, v2: bool = False,
               mode: str) -> NetworkConfig:
    lengths = SequenceLengths.for_duration(TRAINING_DURATION_S, mode)
    return NetworkConfig(name=name, latent_dim=latent_dim, hidden_dim=hidden_dim, depth=depth,
                         fused_depth=fused_depth, num_heads=hidden_dim // 64, v2=v2, mode=mode,
                         latent_seq_len=lengths.latent_seq_len, clip_seq_len=lengths.clip_seq_len,
                         sync_seq_len=lengths.sync_seq_len)


VARIANTS: dict[str, NetworkConfig] = {
    "small_16k": _published("small_16k", latent_dim=20, hidden_dim=448, depth=12, fused_depth=8, mode="16k"),
    "small_44k": _published("small_44k", latent_dim=40, hidden_dim=448, depth=12, fused_depth=8, mode="44k"),
    "medium_44k": _published("medium_44k", latent_dim=40, hidden_dim=896, depth=12, fused_depth=8, mode="44k"),
    "large_44k": _published("large_44k", latent_dim=40, hidden_dim=896, depth=21, fused_depth=14, mode="44k"),
    "large_44k_v2": _published("large_44k_v2", latent_dim=40, hidden_dim=896, depth=21, fused_depth=14,
                               v2=True, mode="44k"),
}

# Checkpoint file name of each published variant (for messages only; files are identified by their keys).
CHECKPOINT_FILES: dict[str, str] = {name: f"mmaudio_{name}.pth" for name in VARIANTS}
