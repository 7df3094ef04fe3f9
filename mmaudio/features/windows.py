"""Frames for every window of a long soundtrack, chosen by timestamp from exactly that window's span.

Window k of a long soundtrack starts at ``s_k`` seconds and lasts the training length. Its CLIP (8 fps) and
Synchformer (25 fps) frames are chosen by the reference's rule as if the clip began at ``s_k``: slot j of a rate
takes the first frame whose time, counted from ``s_k``, reaches the accumulated target ``j / rate``. The frames
arrive once, in presentation order (decoded from a file, or read from an IMAGE batch chunk by chunk), and each
chunk is offered to the windows whose span it reaches; a window's resized frames are handed out as soon as its
span is over, so only the windows that overlap the current time hold frames.

A window that reaches past the clip's last frame (the last one may, by less than one latent frame) holds the
clip's last frame for its remaining slots.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

import torch

from ..errors import InvalidInputError
from .frames import (
    CLIP_FPS,
    SYNC_FPS,
    FramePlan,
    PreparedFrames,
    Progress,
    check_duration,
    resize_for_clip,
    resize_for_sync,
)
from .streaming import Chunk, FrameStreamer, _pick, _unpack


def prepare_windows(chunks: Iterable[Chunk], starts: Sequence[float], duration: float, *,
                    expected_frames: int | None = None, progress: Progress | None = None,
                    ) -> Iterator[tuple[int, PreparedFrames]]:
    """(window index, its frames) for every window, in order, each as soon as its span has been read.

    ``starts``: each window's start in seconds (increasing); ``duration``: every window's length. Each window's
    frames hold exactly ``int(8 * duration)`` CLIP and ``int(25 * duration)`` Synchformer slots.
    ``progress(frames read, expected)`` follows every chunk and may raise to cancel.
    """
    length = check_duration(duration)
    if any(b < a for a, b in itertools.pairwise(starts)):
        raise InvalidInputError("window starts must increase")
    open_windows: dict[int, FrameStreamer] = {}
    next_window, read = 0, 0
    last_frame: torch.Tensor | None = None
    iterator = iter(chunks)
    try:
        for chunk in iterator:
            frames, times = _unpack(chunk)
            times = torch.as_tensor(times, dtype=torch.float64)
            if times.numel() == 0:
                continue
            newest = float(times[-1])
            while next_window < len(starts) and starts[next_window] <= newest:
                open_windows[next_window] = FrameStreamer(length, expected_duration=length)
                next_window += 1
            for index, streamer in open_windows.items():
                streamer.add(frames, times - starts[index])
            last_frame = _pick(frames, [frames.shape[0] - 1]).clone()
            read += int(times.numel())
            del frames, chunk
            for index in [k for k, s in open_windows.items() if _span_read(s)]:
                yield index, _exact_slots(open_windows.pop(index).finish(), length)
            if progress is not None:
                progress(read, max(read, expected_frames or 0))
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    if last_frame is None:
        raise InvalidInputError("frames: the video gave zero frames; expected at least one")
    for index in sorted(open_windows):
        yield index, _finish_short(open_windows[index], last_frame, length)
    for index in range(next_window, len(starts)):  # windows beyond the last frame (a header longer than the clip)
        yield index, _held(last_frame, length)


def _span_read(streamer: FrameStreamer) -> bool:
    """Whether a frame past the window's end has arrived (both clocks closed: no slot can change)."""
    return streamer._clip_clock.closed and streamer._sync_clock.closed


def _finish_short(streamer: FrameStreamer, last_frame: torch.Tensor, length: float) -> PreparedFrames:
    """A window the stream ended in: its frames, the last one held to the end of the window."""
    try:
        prepared = streamer.finish()
    except InvalidInputError:  # too little of the window was covered to plan it: the last frame throughout
        return _held(last_frame, length)
    if prepared.plan.is_still:
        return _held(last_frame, length)
    return _exact_slots(prepared, length)


def _held(frame: torch.Tensor, length: float) -> PreparedFrames:
    """One frame for every slot of a window (nothing of the clip reaches it)."""
    clip = resize_for_clip(frame)
    sync = resize_for_sync(frame)
    n_clip, n_sync = int(CLIP_FPS * length), int(SYNC_FPS * length)
    plan = FramePlan(num_source_frames=1, clip_indices=(0,) * n_clip, sync_indices=(0,) * n_sync,
                     clip_times=tuple(k / CLIP_FPS for k in range(n_clip)),
                     sync_times=tuple(k / SYNC_FPS for k in range(n_sync)), duration=length, requested_duration=length)
    return PreparedFrames(plan=plan, clip_u8=clip.expand(n_clip, -1, -1, -1).clone(),
                          sync_u8=sync.expand(n_sync, -1, -1, -1).clone())


def _exact_slots(prepared: PreparedFrames, length: float) -> PreparedFrames:
    """``prepared`` with exactly the slot counts of ``length`` seconds, the last slot repeated where short."""
    n_clip, n_sync = int(CLIP_FPS * length), int(SYNC_FPS * length)
    plan = prepared.plan
    if len(plan.clip_indices) == n_clip and len(plan.sync_indices) == n_sync:
        return prepared

    def pad(u8: torch.Tensor, count: int) -> torch.Tensor:
        if u8.shape[0] >= count:
            return u8[:count]
        return torch.cat([u8, u8[-1:].expand(count - u8.shape[0], -1, -1, -1)])

    def pad_indices(values: tuple, count: int) -> tuple:
        return (values + (values[-1],) * count)[:count] if values else values

    plan = replace(plan, clip_indices=pad_indices(plan.clip_indices, n_clip),
                   sync_indices=pad_indices(plan.sync_indices, n_sync),
                   clip_times=pad_indices(plan.clip_times, n_clip), sync_times=pad_indices(plan.sync_times, n_sync),
                   duration=length)
    return PreparedFrames(plan=plan, clip_u8=pad(prepared.clip_u8, n_clip), sync_u8=pad(prepared.sync_u8, n_sync))


def image_chunks(frames: torch.Tensor, times: Sequence[float], chunk_size: int,
                 ) -> Iterator[tuple[torch.Tensor, list[float]]]:
    """An IMAGE batch as (frames, times) chunks in presentation order (views: nothing is copied here)."""
    for start in range(0, frames.shape[0], chunk_size):
        yield frames[start:start + chunk_size], list(times[start:start + chunk_size])
