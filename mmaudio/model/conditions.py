"""Projected conditioning features, computed once per generation and reused at every sampler step."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ..errors import InvalidInputError


@dataclass
class Conditions:
    """Hidden-size features of one batch: per-token clip/sync/text sequences and pooled clip/text vectors.

    ``sync_f`` is already resampled to the latent length. Batch-1 entries (the learned empty features) may be
    broadcast views; :meth:`expand` and :meth:`concat` keep them cheap.
    """

    clip_f: torch.Tensor  # [B, clip_len, D]
    sync_f: torch.Tensor  # [B, latent_len, D]
    text_f: torch.Tensor  # [B, text_len, D]
    clip_f_c: torch.Tensor  # [B, D]
    text_f_c: torch.Tensor  # [B, D]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def batch_size(self) -> int:
        return max(t.shape[0] for t in self.tensors().values())

    @property
    def dtype(self) -> torch.dtype:
        return self.clip_f.dtype

    @property
    def device(self) -> torch.device:
        return self.clip_f.device

    def expand(self, batch_size: int) -> Conditions:
        """Every entry at ``batch_size``; batch-1 entries are broadcast, others must already match."""
        out = {}
        for name, value in self.tensors().items():
            if value.shape[0] == batch_size:
                out[name] = value
            elif value.shape[0] == 1:
                out[name] = value.expand(batch_size, *value.shape[1:])
            else:
                raise InvalidInputError(
                    f"conditioning {name} has batch {value.shape[0]}, which cannot be used for batch {batch_size}"
                )
        return Conditions(**out)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Conditions:
        return Conditions(**{name: value.to(device=device, dtype=dtype) for name, value in self.tensors().items()})

    @staticmethod
    def concat(parts: list[Conditions]) -> Conditions:
        """Stack several conditions along the batch (e.g. conditional and unconditional for one CFG pass)."""
        sized = [part.expand(part.batch_size) for part in parts]
        return Conditions(**{
            name: torch.cat([part.tensors()[name] for part in sized], dim=0) for name in sized[0].tensors()
        })
