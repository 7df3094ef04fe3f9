"""Frames + frame rate + prompts -> the three conditioning sequences of the MMAudio network.

``clip_f`` (B, 8*duration, 1024): CLIP embeddings of the 8 fps frames; ``sync_f`` (B, S*8, 768): Synchformer
features of the 25 fps frames in 16-frame segments every 8 frames; ``text_f`` (B, 77, 1024): CLIP text token
states. Frames are chosen by timestamp and resized on uint8 exactly as the reference reader does (``frames.py``),
a chunk at a time, and the models see batches of frames or segments, never the whole clip at once. A video file
can be streamed instead (``encode_video_stream``): frames are chosen and resized as they are decoded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError
from .clip import ClipEncoder, load_clip
from .frames import (
    FramePlan,
    FrameRate,
    Frames,
    PreparedFrames,
    Progress,
    check_frames,
    clip_input,
    plan_frames,
    prepare_frames,
    sync_input,
)
from .streaming import Chunk, VideoFile, prepare_frames_streaming
from .synchformer import SynchformerVisual, encode_sync_frames, load_synchformer, num_segments


@dataclass
class VideoFeatures:
    """CLIP and Synchformer features of one clip (CPU float32) and the duration they cover."""

    clip_f: torch.Tensor | None  # (1, Tc, 1024); None when CLIP was not requested
    sync_f: torch.Tensor | None  # (1, S*8, 768); None for a still image (the network's empty sync is used)
    duration: float
    plan: FramePlan


@dataclass
class Conditions:
    """Everything the network's conditioning needs for B prompts sharing one clip."""

    clip_f: torch.Tensor | None  # (B, Tc, 1024)
    sync_f: torch.Tensor | None  # (B, S*8, 768)
    text_f: torch.Tensor  # (B, 77, 1024)
    duration: float
    plan: FramePlan | None


class _Counter:
    """One ``progress(done, total)`` stream across frame preparation, CLIP batches and Synchformer batches."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done, self.progress = total, 0, progress

    def stage(self) -> Progress:
        base = self.done

        def report(done: int, _total: int) -> None:
            self.done = base + done
            if self.progress is not None:
                self.progress(self.done, self.total)

        return report


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

    @classmethod
    def from_state_dicts(
        cls,
        clip_sd: Mapping[str, torch.Tensor] | None,
        synchformer_sd: Mapping[str, torch.Tensor] | None,
        *,
        dtype: torch.dtype | None = torch.float32,
        device: torch.device | str = "cpu",
        ops: Any = None,
    ) -> FeatureExtractor:
        clip = load_clip(clip_sd, dtype=dtype, device=device) if clip_sd is not None else None
        sync = None
        if synchformer_sd is not None:
            sync = load_synchformer(synchformer_sd, dtype=dtype, device=device, ops=ops)
        return cls(clip, sync)

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

    # ------------------------------------------------------------------------------------------- whole clip

    @staticmethod
    def _model_units(plan: FramePlan, with_clip: bool) -> int:
        """Progress units of the model stages: distinct CLIP frames and Synchformer segments."""
        return (len(set(plan.clip_indices)) if with_clip else 0) + num_segments(len(plan.sync_indices))

    def encode_prepared(
        self,
        prepared: PreparedFrames,
        *,
        with_clip: bool = True,
        clip_batch: int = 16,
        sync_batch: int = 8,
        progress: Progress | None = None,
    ) -> VideoFeatures:
        """CLIP and Synchformer features of frames already chosen and resized (``progress`` over model batches)."""
        return self._encode_prepared(prepared, with_clip, clip_batch, sync_batch,
                                     _Counter(self._model_units(prepared.plan, with_clip), progress))

    def _encode_prepared(self, prepared: PreparedFrames, with_clip: bool, clip_batch: int, sync_batch: int,
                         counter: _Counter) -> VideoFeatures:
        plan = prepared.plan
        clip_f = self.encode_clip_frames(prepared, batch=clip_batch, progress=counter.stage()) if with_clip else None
        sync_f = None
        if not plan.is_still:
            sync_f = self.encode_sync_frames(prepared, batch=sync_batch, progress=counter.stage())
        return VideoFeatures(clip_f=clip_f, sync_f=sync_f, duration=plan.duration, plan=plan)

    def encode_video(
        self,
        frames: Frames,
        fps: FrameRate | None = None,
        *,
        times: Sequence[float] | torch.Tensor | None = None,
        duration: float | None = None,
        with_clip: bool = True,
        clip_batch: int = 16,
        sync_batch: int = 8,
        chunk_size: int | None = None,
        progress: Progress | None = None,
    ) -> VideoFeatures:
        """Choose, resize and encode the frames of one clip (IMAGE [N,H,W,C] + fps, or explicit timestamps).

        Every input check runs before any model does. ``progress(done, total)`` is called after each chunk of
        frames and each model batch, and may raise to interrupt.
        """
        n, _, _, _ = check_frames(frames)
        plan = plan_frames(n, fps, times=times, duration=duration)
        if with_clip:
            self._require_clip()
        if not plan.is_still:
            self._require_synchformer()
        counter = _Counter(len(plan.source_indices) + self._model_units(plan, with_clip), progress)
        prepared = prepare_frames(frames, plan, chunk_size=chunk_size, progress=counter.stage())
        return self._encode_prepared(prepared, with_clip, clip_batch, sync_batch, counter)

    def encode_video_stream(
        self,
        chunks: Iterable[Chunk] | VideoFile,
        *,
        duration: float | None = None,
        with_clip: bool = True,
        clip_batch: int = 16,
        sync_batch: int = 8,
        expected_frames: int | None = None,
        decode_progress: Progress | None = None,
        progress: Progress | None = None,
    ) -> VideoFeatures:
        """:meth:`encode_video` for a clip that arrives as decoded chunks (frames [n,H,W,C], timestamps [n]), or
        for a :class:`VideoFile` (read for its own duration unless ``duration`` is given).

        Frames are chosen and resized as they arrive (``streaming.py``), so only one chunk is ever held at full
        resolution; the features equal those of the whole clip decoded first. ``decode_progress(frames, expected)``
        follows each chunk, ``progress(done, total)`` each model batch; either may raise to interrupt. The models
        are checked before anything is decoded (a stream is a video: Synchformer is required).
        """
        if with_clip:
            self._require_clip()
        self._require_synchformer()
        if isinstance(chunks, VideoFile):
            file = chunks if duration is None or duration == chunks.duration else chunks.for_duration(duration)
            prepared = file.prepare(progress=decode_progress)
        else:
            prepared = prepare_frames_streaming(chunks, duration=duration, expected_frames=expected_frames,
                                                progress=decode_progress)
        return self.encode_prepared(prepared, with_clip=with_clip, clip_batch=clip_batch, sync_batch=sync_batch,
                                    progress=progress)

    def forward(
        self,
        frames: Frames | None,
        fps: FrameRate | None,
        prompts: Sequence[str],
        *,
        times: Sequence[float] | torch.Tensor | None = None,
        duration: float | None = None,
        with_clip: bool = True,
        progress: Progress | None = None,
        stream: Iterable[Chunk] | VideoFile | None = None,
        expected_frames: int | None = None,
        decode_progress: Progress | None = None,
        **batching: int,
    ) -> Conditions:
        """All three conditions for ``len(prompts)`` samples of one clip (video features shared, not copied).

        The clip is ``frames`` (+ ``fps`` or ``times``) or, decoded as it goes, ``stream`` (see
        :meth:`encode_video_stream`; ``frames`` must then be None). Neither is text-to-audio: only ``text_f`` is
        computed and ``duration`` must be given.
        """
        if isinstance(prompts, str) or not prompts:
            raise InvalidInputError("prompts: expected a non-empty list of strings")
        b = len(prompts)
        if frames is not None and stream is not None:
            raise InvalidInputError("give either frames or a stream of decoded chunks, not both")
        if frames is None and stream is None:
            if duration is None:
                raise InvalidInputError("duration: text-to-audio (no frames) needs an explicit duration")
            return Conditions(None, None, self.encode_text(prompts), float(duration), None)
        if stream is not None:
            video = self.encode_video_stream(stream, duration=duration, with_clip=with_clip,
                                             expected_frames=expected_frames, decode_progress=decode_progress,
                                             progress=progress, **batching)
        else:
            video = self.encode_video(frames, fps, times=times, duration=duration, with_clip=with_clip,
                                      progress=progress, **batching)
        text_f = self.encode_text(prompts)
        clip_f = video.clip_f.expand(b, -1, -1) if video.clip_f is not None else None
        sync_f = video.sync_f.expand(b, -1, -1) if video.sync_f is not None else None
        return Conditions(clip_f, sync_f, text_f, video.duration, video.plan)
