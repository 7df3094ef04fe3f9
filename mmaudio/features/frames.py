"""Which source frames feed CLIP and Synchformer, and how they are resized.

The reference reads a video file and keeps, for each target rate r (8 fps for CLIP, 25 fps for Synchformer), the
first decoded frame whose timestamp reaches the next target time, where the target time is an accumulated double
``next += 1/r`` (not ``k/r``). It then resizes *uint8* frames with torchvision's bicubic antialias kernel. Sync
depends on getting both right for any source rate, so this module reproduces them from a ComfyUI IMAGE batch and
its frame rate (or explicit per-frame timestamps), selecting indices first and touching only the chosen frames, a
chunk at a time, so a long full-HD clip never gets a second full-resolution copy. ``streaming.py`` applies the
same rule (:class:`SlotClock`) and the same resizing while a video file is being decoded.
"""

from __future__ import annotations

import itertools
import logging
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as tvf

from ..errors import InvalidInputError

log = logging.getLogger(__name__)

CLIP_FPS = 8.0
SYNC_FPS = 25.0
CLIP_SIZE = 384
SYNC_SIZE = 224
SYNC_SEGMENT = 16  # frames per Synchformer segment
SYNC_STEP = 8  # frames between segment starts
MIN_SYNC_SECONDS = SYNC_SEGMENT / SYNC_FPS

FrameRate = float | int | Fraction
Frames = torch.Tensor | Sequence[torch.Tensor]
Progress = Callable[[int, int], None]


# ----------------------------------------------------------------------------------------------- timestamps


def exact_rate(fps: FrameRate, what: str = "fps") -> Fraction:
    """The frame rate as an exact fraction, so frame times round like a decoder's ``pts * time_base``.

    A float such as 29.97002997002997 (``float(30000/1001)``, what ComfyUI hands over) is snapped back to the
    NTSC fraction it came from; a float with no small-denominator form is taken exactly as given.
    """
    if isinstance(fps, torch.Tensor) and fps.numel() == 1:
        fps = fps.item()
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real):
        raise InvalidInputError(f"{what} must be a number of frames per second, got {type(fps).__name__}")
    if isinstance(fps, (Fraction, int)):
        rate = Fraction(fps)
    else:
        value = float(fps)
        if not math.isfinite(value):
            raise InvalidInputError(f"{what} must be a finite number of frames per second, got {value}")
        rate = Fraction(value)
        snapped = rate.limit_denominator(1001)
        if snapped > 0 and abs(float(snapped) - value) <= 1e-7 * value:  # also undoes a float32 round trip
            rate = snapped
    if rate <= 0:
        raise InvalidInputError(f"{what} must be positive, got {float(rate)}")
    return rate


def frame_times(num_frames: int, fps: FrameRate) -> list[float]:
    """Timestamp of frame i = i / fps, correctly rounded to double like PyAV's ``frame.time``."""
    rate = exact_rate(fps)
    return [float(Fraction(i) / rate) for i in range(num_frames)]


class SlotClock:
    """The reference's slot rule for one target rate, fed one frame time at a time.

    Slot k's target time is the double accumulated by ``next += 1/rate`` (not ``k/rate``), so it can land a hair
    above an exact frame time and skip that frame, as the reference does. A frame fills every slot whose target it
    has reached; frames before time 0 fill none; the first frame later than ``end`` closes the clock (the reference
    stops reading there). Fed frame by frame, a decoder can tell at once whether a frame is needed.
    """

    def __init__(self, rate: float, end: float = math.inf) -> None:
        self.step = 1.0 / rate
        self.end = end
        self.next = 0.0
        self.closed = False

    def fill(self, t: float) -> list[float]:
        """Target times of the slots the frame at time ``t`` fills (empty when it fills none)."""
        if self.closed or t < 0.0:
            return []
        if t > self.end:
            self.closed = True
            return []
        filled = []
        while t >= self.next:
            filled.append(self.next)
            self.next += self.step
        return filled


def sample_and_hold(times: Sequence[float], rate: float, end: float) -> tuple[list[int], list[float]]:
    """Source index for every slot of a ``rate`` fps stream, and the slot's target time (see :class:`SlotClock`)."""
    clock = SlotClock(rate, end)
    indices: list[int] = []
    slot_times: list[float] = []
    for i, t in enumerate(times):
        filled = clock.fill(t)
        if clock.closed:
            break
        indices.extend([i] * len(filled))
        slot_times.extend(filled)
    return indices, slot_times


@dataclass(frozen=True)
class FramePlan:
    """Which source frame fills each CLIP and Synchformer slot, and the duration the features cover.

    ``sync_indices`` is empty for a still image (image-to-audio), whose single frame stands for the whole duration
    on the CLIP side only, like the reference's image mode.
    """

    num_source_frames: int
    clip_indices: tuple[int, ...]
    sync_indices: tuple[int, ...]
    clip_times: tuple[float, ...]
    sync_times: tuple[float, ...]
    duration: float
    requested_duration: float | None

    @property
    def is_still(self) -> bool:
        return not self.sync_indices

    @property
    def num_sync_segments(self) -> int:
        if len(self.sync_indices) < SYNC_SEGMENT:
            return 0
        return (len(self.sync_indices) - SYNC_SEGMENT) // SYNC_STEP + 1

    @property
    def source_indices(self) -> list[int]:
        """Every source frame used at least once, ascending."""
        return sorted(set(self.clip_indices) | set(self.sync_indices))


def check_duration(duration: float | None) -> float | None:
    """A requested duration as a positive float (None stays None: the clip's length)."""
    if duration is None:
        return None
    if isinstance(duration, bool) or not isinstance(duration, (int, float)):
        raise InvalidInputError(f"duration must be a number of seconds, got {type(duration).__name__}")
    value = float(duration)
    if not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"duration must be a positive finite number of seconds, got {value}")
    return value


def check_times(times: Sequence[float] | torch.Tensor, num_frames: int) -> list[float]:
    """Per-frame timestamps as floats: one per frame, finite, in presentation order."""
    values = [float(t) for t in (times.tolist() if isinstance(times, torch.Tensor) else times)]
    if len(values) != num_frames:
        raise InvalidInputError(f"timestamps: got {len(values)} for {num_frames} frames; expected one per frame")
    if not all(math.isfinite(t) for t in values):
        raise InvalidInputError("timestamps must be finite numbers of seconds")
    if any(b < a for a, b in itertools.pairwise(values)):
        raise InvalidInputError("timestamps must be in presentation order (non-decreasing)")
    return values


def plan_frames(
    num_frames: int,
    fps: FrameRate | None = None,
    *,
    times: Sequence[float] | torch.Tensor | None = None,
    duration: float | None = None,
) -> FramePlan:
    """Choose the CLIP (8 fps) and Synchformer (25 fps) source frames of a clip, as the reference reader does.

    ``fps`` gives frame i the time i/fps; ``times`` gives explicit per-frame timestamps (decoded pts) instead.
    ``duration`` defaults to the clip length. When the frames cover less than the requested duration, the duration
    is cut to what the frames cover (len/8 or len/25, as the reference does) and a warning is logged. A single frame
    is a still image: it needs an explicit ``duration`` and yields CLIP slots only.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise InvalidInputError(f"frames: got {num_frames!r} frames; expected at least one frame")
    requested = check_duration(duration)
    rate = exact_rate(fps) if fps is not None else None
    if num_frames == 1:
        return _plan_still(requested)
    if times is not None:
        frame_t = check_times(times, num_frames)
    elif rate is not None:
        frame_t = [float(Fraction(i) / rate) for i in range(num_frames)]
    else:
        raise InvalidInputError("fps: a frame rate (or explicit per-frame timestamps) is required for video frames")

    if rate is not None:
        clip_length = frame_t[-1] + 1.0 / float(rate)
    else:
        span = frame_t[-1] - frame_t[0]
        clip_length = frame_t[-1] + (span / (num_frames - 1) if span > 0 else 0.0)
    target = requested if requested is not None else clip_length

    clip_idx, clip_t = sample_and_hold(frame_t, CLIP_FPS, target)
    sync_idx, sync_t = sample_and_hold(frame_t, SYNC_FPS, target)

    effective = target
    if len(clip_idx) / CLIP_FPS < effective:
        effective = len(clip_idx) / CLIP_FPS
    if len(sync_idx) / SYNC_FPS < effective:
        effective = len(sync_idx) / SYNC_FPS
    if effective < target:
        if requested is not None:
            log.warning("requested duration %.3f s is longer than the frames cover; using %.3f s", requested,
                        effective)
        else:
            log.info("the frames cover %.3f s at 8 and 25 fps; using that as the duration", effective)

    n_clip = int(CLIP_FPS * effective)
    n_sync = int(SYNC_FPS * effective)
    if n_sync < SYNC_SEGMENT:
        need = f"expected at least {MIN_SYNC_SECONDS:.2f} s ({SYNC_SEGMENT} frames at {SYNC_FPS:g} fps)"
        if requested is not None and effective == requested:
            raise InvalidInputError(f"duration: {requested} s is shorter than one Synchformer segment; {need}")
        raise InvalidInputError(
            f"frames: the clip covers {effective:.3f} s at 8 and 25 fps ({num_frames} frames), shorter than one"
            f" Synchformer segment; {need} (a single image gives image-to-audio)")
    return FramePlan(
        num_source_frames=num_frames,
        clip_indices=tuple(clip_idx[:n_clip]),
        sync_indices=tuple(sync_idx[:n_sync]),
        clip_times=tuple(clip_t[:n_clip]),
        sync_times=tuple(sync_t[:n_sync]),
        duration=effective,
        requested_duration=requested,
    )


def _plan_still(duration: float | None) -> FramePlan:
    if duration is None:
        raise InvalidInputError("duration: a single image (image-to-audio) needs an explicit duration in seconds")
    n_clip = int(CLIP_FPS * duration)
    if n_clip < 1:
        raise InvalidInputError(
            f"duration: {duration} s is too short for image-to-audio; expected at least {1 / CLIP_FPS} s")
    return FramePlan(
        num_source_frames=1,
        clip_indices=(0,) * n_clip,
        sync_indices=(),
        clip_times=tuple(k / CLIP_FPS for k in range(n_clip)),
        sync_times=(),
        duration=duration,
        requested_duration=duration,
    )


# ----------------------------------------------------------------------------------------------- pixels


def frame_count(frames: Frames) -> int:
    """Number of frames of an IMAGE batch or a list of frames (no validation; see :func:`check_frames`)."""
    return frames.shape[0] if isinstance(frames, torch.Tensor) and frames.ndim in (3, 4) else len(frames)


def check_frames(frames: Frames) -> tuple[int, int, int, int]:
    """Validate an IMAGE batch ([N,H,W,C] or [N,H,W]; C 1, 3 or 4; float 0..1 or uint8) or a list of frames.

    Returns (N, H, W, C). Nothing is copied.
    """
    if isinstance(frames, torch.Tensor):
        shapes = [tuple(frames.shape[1:])] if frames.ndim in (3, 4) else None
        if frames.ndim not in (3, 4):
            raise InvalidInputError(
                f"frames: got a tensor of shape {tuple(frames.shape)}; expected an IMAGE batch [N, H, W, C] "
                "(or [N, H, W] grayscale)")
        n = frames.shape[0]
        dtype = frames.dtype
    elif isinstance(frames, Sequence) and not isinstance(frames, (str, bytes)):
        if not all(isinstance(f, torch.Tensor) for f in frames):
            raise InvalidInputError("frames: a list of frames must contain tensors [H, W, C]")
        if any(f.ndim not in (2, 3) for f in frames):
            raise InvalidInputError("frames: each frame of a list must be [H, W, C] or [H, W]")
        shapes = sorted({tuple(f.shape) for f in frames})
        if len(shapes) > 1:
            raise InvalidInputError(f"frames: all frames must have the same size, got sizes {shapes[:4]}")
        n = len(frames)
        dtypes = {f.dtype for f in frames}
        dtype = dtypes.pop() if len(dtypes) == 1 else None
        if dtype is None:
            raise InvalidInputError("frames: all frames must have the same dtype")
    else:
        raise InvalidInputError(f"frames: expected an IMAGE tensor [N, H, W, C], got {type(frames).__name__}")
    if n == 0:
        raise InvalidInputError("frames: got zero frames; expected at least one")
    shape = shapes[0]
    h, w = shape[0], shape[1]
    c = shape[2] if len(shape) == 3 else 1
    if c not in (1, 3, 4):
        raise InvalidInputError(f"frames: got {c} channels; expected 3 (RGB), 4 (RGBA, alpha dropped) or 1 (gray)")
    if h < 1 or w < 1:
        raise InvalidInputError(f"frames: got frames of size {h}x{w}; expected a non-empty image")
    if dtype != torch.uint8 and not dtype.is_floating_point:
        raise InvalidInputError(f"frames: got dtype {dtype}; expected float (0..1) or uint8 (0..255)")
    return n, h, w, c


def gather_frames(frames: Frames, indices: Sequence[int]) -> torch.Tensor:
    """The listed frames as a new [k, H, W, C] CPU tensor (only these frames are copied, never the input)."""
    if isinstance(frames, torch.Tensor):
        idx = torch.as_tensor(list(indices), dtype=torch.long, device=frames.device)
        chunk = frames.index_select(0, idx)
    else:
        chunk = torch.stack([frames[i] for i in indices])
    if chunk.ndim == 3:
        chunk = chunk.unsqueeze(-1)
    return chunk.cpu()


def auto_chunk_size(height: int, width: int, channels: int, budget_bytes: int = 128 * 2**20) -> int:
    """How many float32 source frames fit in ``budget_bytes`` (1 to 32): the chunk held at full resolution."""
    return max(1, min(32, budget_bytes // max(1, height * width * channels * 4)))


def _quantize(chunk: torch.Tensor, owned: bool) -> torch.Tensor:
    # ``owned``: the chunk is a private copy (gathered frames), so float32 input is scaled in place.
    if chunk.dtype != torch.uint8:
        x = chunk.mul_(255.0) if owned and chunk.dtype == torch.float32 else chunk.to(torch.float32) * 255.0
        chunk = x.nan_to_num_(0.0).round_().clamp_(0.0, 255.0).to(torch.uint8)
        del x
    c = chunk.shape[-1]
    if c == 4:
        chunk = chunk[..., :3]
    elif c == 1:
        chunk = chunk.expand(*chunk.shape[:-1], 3)
    return chunk


def gather_quantized(frames: Frames, indices: Sequence[int]) -> torch.Tensor:
    """The listed frames as a new [k,H,W,3] uint8 tensor: :func:`gather_frames` then quantized to uint8 in place."""
    return _quantize(gather_frames(frames, indices), owned=True)


def _as_nchw(u8_nhwc: torch.Tensor) -> torch.Tensor:
    # A channels-last view, the layout the reference hands to torchvision (numpy HWC frames permuted).
    return u8_nhwc.contiguous().permute(0, 3, 1, 2)


def resize_for_clip(u8_nhwc: torch.Tensor) -> torch.Tensor:
    """[k,H,W,3] uint8 -> [k,3,384,384] uint8: squash (aspect not kept), bicubic antialias on uint8 (CPU)."""
    out = tvf.resize(_as_nchw(u8_nhwc), [CLIP_SIZE, CLIP_SIZE], interpolation=InterpolationMode.BICUBIC,
                     antialias=True)
    return out.contiguous()


def sync_resize_geometry(height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(resized (h, w), crop (top, left)): short side to 224, long = int(224*long/short), centre crop 224."""
    if height <= width:
        size = (SYNC_SIZE, int(SYNC_SIZE * width / height))
    else:
        size = (int(SYNC_SIZE * height / width), SYNC_SIZE)
    top = round((size[0] - SYNC_SIZE) / 2.0)
    left = round((size[1] - SYNC_SIZE) / 2.0)
    return size, (top, left)


def resize_for_sync(u8_nhwc: torch.Tensor) -> torch.Tensor:
    """[k,H,W,3] uint8 -> [k,3,224,224] uint8: short side 224 bicubic antialias on uint8, centre crop."""
    (rh, rw), (top, left) = sync_resize_geometry(u8_nhwc.shape[1], u8_nhwc.shape[2])
    out = tvf.resize(_as_nchw(u8_nhwc), [rh, rw], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return out[..., top:top + SYNC_SIZE, left:left + SYNC_SIZE].contiguous()


def clip_input(u8: torch.Tensor) -> torch.Tensor:
    """uint8 CLIP frames -> float32 in [0, 1] (multiplied by float32(1/255), as torchvision's ToDtype does)."""
    return u8.to(torch.float32) * (1.0 / 255.0)


def sync_input(u8: torch.Tensor) -> torch.Tensor:
    """uint8 Synchformer frames -> float32 in [-1, 1]: x*(1/255), then (x - 0.5) / 0.5."""
    return (u8.to(torch.float32) * (1.0 / 255.0) - 0.5) / 0.5


@dataclass
class PreparedFrames:
    """Resized uint8 frames for each slot of a :class:`FramePlan` (CPU; ~0.45 MB per CLIP slot)."""

    plan: FramePlan
    clip_u8: torch.Tensor  # [Tc, 3, 384, 384] uint8
    sync_u8: torch.Tensor  # [Ts, 3, 224, 224] uint8 (Ts = 0 for a still image)

    @property
    def duration(self) -> float:
        return self.plan.duration


def prepare_frames(
    frames: Frames,
    plan: FramePlan,
    *,
    chunk_size: int | None = None,
    progress: Progress | None = None,
) -> PreparedFrames:
    """Quantize and resize only the planned source frames, ``chunk_size`` of them at a time.

    Each source frame is read once even when several slots use it; ``chunk_size`` None picks as many as fit in
    128 MiB at full resolution. ``progress(done, total)`` is called after every chunk (total = number of distinct
    source frames) and may raise to interrupt.
    """
    n, h, w, c = check_frames(frames)
    if n != plan.num_source_frames:
        raise InvalidInputError(f"frames: the plan is for {plan.num_source_frames} frames but {n} were given")
    if chunk_size is None:
        chunk_size = auto_chunk_size(h, w, c)
    if chunk_size < 1:
        raise InvalidInputError(f"chunk_size must be at least 1, got {chunk_size}")
    clip_slots: dict[int, list[int]] = {}
    for slot, src in enumerate(plan.clip_indices):
        clip_slots.setdefault(src, []).append(slot)
    sync_slots: dict[int, list[int]] = {}
    for slot, src in enumerate(plan.sync_indices):
        sync_slots.setdefault(src, []).append(slot)

    clip_u8 = torch.empty((len(plan.clip_indices), 3, CLIP_SIZE, CLIP_SIZE), dtype=torch.uint8)
    sync_u8 = torch.empty((len(plan.sync_indices), 3, SYNC_SIZE, SYNC_SIZE), dtype=torch.uint8)
    sources = plan.source_indices
    for start in range(0, len(sources), chunk_size):
        chunk_src = sources[start:start + chunk_size]
        u8 = gather_quantized(frames, chunk_src)
        _scatter(u8, chunk_src, clip_slots, resize_for_clip, clip_u8)
        _scatter(u8, chunk_src, sync_slots, resize_for_sync, sync_u8)
        del u8
        if progress is not None:
            progress(min(start + chunk_size, len(sources)), len(sources))
    return PreparedFrames(plan=plan, clip_u8=clip_u8, sync_u8=sync_u8)


def _scatter(
    u8: torch.Tensor,
    chunk_src: Sequence[int],
    slots_of: dict[int, list[int]],
    resize: Callable[[torch.Tensor], torch.Tensor],
    out: torch.Tensor,
) -> None:
    rows = [j for j, src in enumerate(chunk_src) if src in slots_of]
    if not rows:
        return
    resized = resize(u8 if len(rows) == len(chunk_src) else u8[rows])
    for r, j in enumerate(rows):
        for slot in slots_of[chunk_src[j]]:
            out[slot] = resized[r]


def select_and_prepare(
    frames: Frames,
    fps: FrameRate | None = None,
    *,
    times: Sequence[float] | torch.Tensor | None = None,
    duration: float | None = None,
    chunk_size: int | None = None,
    progress: Progress | None = None,
) -> PreparedFrames:
    """:func:`plan_frames` then :func:`prepare_frames`; every input check happens before any pixel is touched."""
    n, _, _, _ = check_frames(frames)
    plan = plan_frames(n, fps, times=times, duration=duration)
    return prepare_frames(frames, plan, chunk_size=chunk_size, progress=progress)
