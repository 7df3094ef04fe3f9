"""Prepared frames and prompts -> the three conditioning sequences of the MMAudio network.

``clip_f`` (1, 8*duration, 1024): CLIP embeddings of the 8 fps frames; ``sync_f`` (1, S*8, 768): Synchformer
features of the 25 fps frames in 16-frame segments every 8 frames; ``text_f`` (B, 77, 1024): CLIP text token
states. The frames come chosen by timestamp and resized on uint8 exactly as the reference reader does
(``frames.py``, ``streaming.py``, ``windows.py``); the models see batches of frames or segments, never the whole
clip at once. Which frames and when is the engine's business (``mmaudio/engine/conditions.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InvalidInputError
from .clip import ClipEncoder
from .frames import (
    PreparedFrames,
    Progress,
    clip_input,
    sync_input,
)
from .synchformer import SynchformerVisual, encode_sync_frames


def _compute_dtype(stored: torch.dtype, device: torch.device) -> torch.dtype:
    if device.type == "cpu" or stored not in (torch.float16, torch.bfloat16):
        return torch.float32
    return stored


class FeatureExtractor(nn.Module):
    """Holds CLIP (image + text) and the Synchformer visual encoder; either may be absent.

    Inputs go to the device of each model's weights unless ``device`` names another one (a memory manager that
    leaves some weights on the CPU and computes elsewhere).
    """

    def __init__(
        self,
        clip: ClipEncoder | None = None,
        synchformer: SynchformerVisual | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.clip = clip
        self.synchformer = synchformer
        self.device = torch.device(device) if device is not None else None

    # ------------------------------------------------------------------------------------------- pieces

    def _require_clip(self) -> ClipEncoder:
        if self.clip is None:
            raise InvalidInputError("CLIP is not loaded; load the feature models with a CLIP checkpoint")
        return self.clip

    def _require_synchformer(self) -> SynchformerVisual:
        if self.synchformer is None:
            raise InvalidInputError("Synchformer is not loaded; load the feature models with a Synchformer file")
        return self.synchformer

    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """(B, 77, 1024) CLIP token states of the prompts (float32, CPU)."""
        clip = self._require_clip()
        with torch.no_grad():
            return clip.encode_text(prompts).float().cpu()

    def encode_clip_frames(
        self, prepared: PreparedFrames, *, batch: int = 16, progress: Progress | None = None
    ) -> torch.Tensor:
        """(1, Tc, 1024): each distinct source frame is encoded once, ``batch`` frames per forward."""
        clip = self._require_clip()
        indices = prepared.plan.clip_indices
        first_slot: dict[int, int] = {}
        for slot, src in enumerate(indices):
            first_slot.setdefault(src, slot)
        unique_slots = list(first_slot.values())
        position = {src: i for i, src in enumerate(first_slot)}
        out = []
        with torch.no_grad():
            for start in range(0, len(unique_slots), batch):
                rows = unique_slots[start:start + batch]
                out.append(clip.encode_images(clip_input(prepared.clip_u8[rows]), self.device).float().cpu())
                if progress is not None:
                    progress(min(start + batch, len(unique_slots)), len(unique_slots))
        feats = torch.cat(out)
        gather = torch.tensor([position[src] for src in indices], dtype=torch.long)
        return feats.index_select(0, gather).unsqueeze(0)

    def encode_sync_frames(
        self, prepared: PreparedFrames, *, batch: int = 8, progress: Progress | None = None
    ) -> torch.Tensor:
        """(1, S*8, 768) Synchformer features, ``batch`` segments per forward."""
        model = self._require_synchformer()
        device = self.device or model.pos_embed.device
        with torch.no_grad():
            return encode_sync_frames(
                model, prepared.sync_u8.unsqueeze(0), to_input=sync_input, batch=batch, device=device,
                dtype=_compute_dtype(model.dtype, device), progress=progress)
