"""Projected conditioning features, computed once per generation and reused at every sampler step."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import NamedTuple

import torch

from ..errors import InvalidInputError

# Below this share of distinct rows the latent stream's adaLN runs on distinct rows (the gather costs little).
DISTINCT_ROWS_WORTHWHILE = 0.9


class DistinctRows(NamedTuple):
    """The distinct sync rows of every sample: ``rows`` [U, D], the sample each belongs to ``sample`` [U], and
    for every token the row it holds, ``index`` [B, L]."""

    rows: torch.Tensor
    sample: torch.Tensor
    index: torch.Tensor


def distinct_rows(sequence: torch.Tensor) -> DistinctRows:
    """Exact deduplication of the rows of each sample of ``sequence`` [B, L, D] (equal bits, equal row).

    The rows are gathered from ``sequence`` itself (at each value's first position), so gradients still flow.
    """
    rows, samples, indices = [], [], []
    offset = 0
    positions = torch.arange(sequence.shape[1], device=sequence.device)
    for b in range(sequence.shape[0]):
        unique, inverse = torch.unique(sequence[b].detach(), dim=0, return_inverse=True)
        first = torch.full((unique.shape[0],), sequence.shape[1], dtype=torch.long, device=sequence.device)
        first.scatter_reduce_(0, inverse, positions, reduce="amin")
        rows.append(sequence[b].index_select(0, first))
        samples.append(torch.full((unique.shape[0],), b, dtype=torch.long, device=sequence.device))
        indices.append(inverse + offset)
        offset += unique.shape[0]
    return DistinctRows(torch.cat(rows), torch.cat(samples), torch.stack(indices))


@dataclass
class NetworkConditions:
    """Hidden-size features of one batch: per-token clip/sync/text sequences and pooled clip/text vectors.

    ``sync_f`` is already resampled to the latent length. Batch-1 entries (the learned empty features) may be
    broadcast views; :meth:`expand` and :meth:`concat` keep them cheap.
    """

    clip_f: torch.Tensor  # [B, clip_len, D]
    sync_f: torch.Tensor  # [B, latent_len, D]
    text_f: torch.Tensor  # [B, text_len, D]
    clip_f_c: torch.Tensor  # [B, D]
    text_f_c: torch.Tensor  # [B, D]
    _distinct_sync: DistinctRows | None = field(default=None, init=False, repr=False, compare=False)
    _distinct_sync_known: bool = field(default=False, init=False, repr=False, compare=False)

    def distinct_sync_rows(self) -> DistinctRows | None:
        """The distinct rows of ``sync_f`` per sample, or None when deduplication would save too little.

        Computed once per NetworkConditions object (a sampler keeps its conditions for all steps) from the values
        themselves, so hand-built conditions are handled as well as projected ones.
        """
        if not self._distinct_sync_known:
            found = distinct_rows(self.sync_f)
            worthwhile = found.rows.shape[0] <= DISTINCT_ROWS_WORTHWHILE * found.index.numel()
            self._distinct_sync = found if worthwhile else None
            self._distinct_sync_known = True
        return self._distinct_sync

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    @property
    def batch_size(self) -> int:
        return max(t.shape[0] for t in self.tensors().values())

    @property
    def dtype(self) -> torch.dtype:
        return self.clip_f.dtype

    @property
    def device(self) -> torch.device:
        return self.clip_f.device

    def expand(self, batch_size: int) -> NetworkConditions:
        """Every entry at ``batch_size``; batch-1 entries are broadcast, others must already match."""
        if all(value.shape[0] == batch_size for value in self.tensors().values()):
            return self  # keeps what was computed from it (distinct sync rows)
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
        return NetworkConditions(**out)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> NetworkConditions:
        moved = {name: value.to(device=device, dtype=dtype) for name, value in self.tensors().items()}
        return NetworkConditions(**moved)

    @staticmethod
    def concat(parts: list[NetworkConditions]) -> NetworkConditions:
        """Stack several conditions along the batch (e.g. conditional and unconditional for one CFG pass)."""
        sized = [part.expand(part.batch_size) for part in parts]
        return NetworkConditions(**{
            name: torch.cat([part.tensors()[name] for part in sized], dim=0) for name in sized[0].tensors()
        })
