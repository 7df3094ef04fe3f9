"""The ``ui`` dicts the nodes send to the pack's frontend extension (``js/``) after they run.

ComfyUI forwards a node's ``ui`` dict to the browser as the ``executed`` message (and stores it in the history),
where ``js/mmaudio_sync.js`` reads it in ``onExecuted``. Each value must be a list (ComfyUI concatenates the lists
of list-mapped runs) of JSON-safe values: NaN or infinity would make the browser's JSON parser reject the whole
message, so every float here is made finite. Key names must not be ``images``, ``audio``, ``video`` or ``text``
(the frontend's queue and preview code treats those as files), and entries carry no ``format`` or ``filename``.

Pure functions: no ComfyUI import, so they are unit-tested without it. The browser side parses defensively
(``js/lib/payload.js``); a payload the nodes cannot build is simply omitted, never an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

TIMING_KEY = "mmaudio_timing"
WAVEFORM_KEY = "mmaudio_waveform"
PAYLOAD_VERSION = 1
DEFAULT_COLUMNS = 512
MAX_COLUMNS = 4096
MAX_WAVEFORMS = 16  # batch rows drawn; more would only bloat the websocket message
DECIMALS = 4
SOURCES = ("video", "image", "text")
SYNC_TOKENS_PER_SEGMENT = 8
COLUMN_BLOCK_SAMPLES = 1 << 22  # samples gathered at once while reducing columns (bounded memory)


def _finite(value: Any, *, minimum: float | None = None) -> float | None:
    """``value`` as a finite float (above ``minimum`` if given), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(number) or (minimum is not None and number <= minimum):
        return None
    return number


def _count(value: Any) -> int | None:
    """A non-negative integer count, else None."""
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if isinstance(value, float) and value != number:
        return None
    return number if number >= 0 else None


# ---- timing --------------------------------------------------------------------------------------------------
def timing_payload(
    num_frames: int | None,
    fps: float | None,
    duration: float,
    clip_frames: int,
    sync_frames: int,
    segments: int,
    *,
    requested_duration: float | None = None,
    source: str | None = None,
    clip_length: float | None = None,
    timestamps: bool = False,
    mask_away_clip: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """``{"mmaudio_timing": [entry]}`` describing what the encode-conditions node did.

    ``num_frames``/``fps``: the clip as given (None for text-to-audio; fps may be a Fraction). ``duration``: the
    effective seconds the conditions were made for; ``requested_duration``: the duration input (None or 0 = the
    clip length). ``clip_frames``/``sync_frames``/``segments``: CLIP frames (8 fps), Synchformer frames (25 fps)
    and segments actually used (0 when that encoder read nothing). ``clip_length``: seconds the frames cover
    (N/fps, or from decoded timestamps, then ``timestamps=True`` and ``fps`` is their average rate).
    An invalid ``duration`` gives an empty list (nothing to show).
    """
    effective = _finite(duration, minimum=0.0)
    if effective is None:
        return {TIMING_KEY: []}
    frames = _count(num_frames)
    rate = _finite(fps, minimum=0.0)
    requested = _finite(requested_duration, minimum=0.0)
    length = _finite(clip_length, minimum=0.0)
    if length is None and frames and frames > 1 and rate is not None and not timestamps:
        length = frames / rate
    if source not in SOURCES:
        source = "text" if not frames else "image" if frames == 1 else "video"
    entry = {
        "version": PAYLOAD_VERSION,
        "source": source,
        "num_frames": frames,
        "fps": rate,
        "timestamps": bool(timestamps),
        "clip_length": length,
        "requested_duration": requested,
        "duration": effective,
        "clip_frames": _count(clip_frames) or 0,
        "sync_frames": _count(sync_frames) or 0,
        "segments": _count(segments) or 0,
        "cut": requested is not None and effective < requested - 1e-9,
        "mask_away_clip": bool(mask_away_clip),
    }
    return {TIMING_KEY: [entry]}


def clip_description(num_frames: int, fps: Any = None, times: Sequence[float] | torch.Tensor | None = None
                     ) -> dict[str, Any]:
    """``num_frames``, ``fps``, ``clip_length`` and ``timestamps`` of a clip, for :func:`timing_payload`.

    With ``fps`` the clip covers N/fps seconds. With decoded per-frame ``times`` (a VIDEO file) it covers the last
    timestamp plus one average frame interval, as the frame selection counts it, and ``fps`` is that average.
    """
    frames = _count(num_frames) or 0
    rate = _finite(fps, minimum=0.0)
    if times is not None and frames > 1:
        values = times.tolist() if isinstance(times, torch.Tensor) else list(times)
        values = [v for v in (_finite(t) for t in values) if v is not None]
        if len(values) > 1:
            span = values[-1] - values[0]
            step = span / (len(values) - 1) if span > 0 else 0.0
            return {"num_frames": frames, "fps": (1.0 / step) if step > 0 else None,
                    "clip_length": (values[-1] + step) or None, "timestamps": True}
    length = frames / rate if rate is not None and frames > 1 else None
    return {"num_frames": frames, "fps": rate, "clip_length": length, "timestamps": False}


def conditions_timing_payload(conditions: Any, *, num_frames: int | None = None, fps: Any = None,
                              requested_duration: float | None = None, clip_length: float | None = None,
                              timestamps: bool = False, mask_away_clip: bool = False) -> dict[str, list[dict]]:
    """:func:`timing_payload` read from the engine's ``EncodedConditions`` (``duration``, ``clip_seq_len``,
    ``sync_seq_len``, ``source``, and when present ``clip``, ``requested_duration`` and ``windows``): frame
    counts are what each encoder actually read (none for text; no Synchformer for a still). A soundtrack made in
    windows adds ``windows``: [start, end] seconds of each, and the counts are summed over the windows."""
    duration = _finite(getattr(conditions, "duration", None), minimum=0.0)
    if duration is None:
        return {TIMING_KEY: []}
    source = getattr(conditions, "source", None)
    clip = getattr(conditions, "clip", None)
    if clip is not None and num_frames is None:
        described = clip_description(clip.num_frames, clip.fps, clip.frame_times)
        num_frames, fps = described["num_frames"], described["fps"]
        clip_length, timestamps = described["clip_length"], described["timestamps"]
    if source == "image":
        fps = None  # a still image has no frame rate
    if requested_duration is None:
        requested_duration = getattr(conditions, "requested_duration", None)
    plan = getattr(conditions, "windows", None)
    spans = _window_spans(plan)
    count = max(1, len(spans))
    window_seconds = _finite(getattr(plan, "window_duration", None), minimum=0.0) or duration
    clip_frames = count * (_count(getattr(conditions, "clip_seq_len", 0)) or 0)
    segments = count * ((_count(getattr(conditions, "sync_seq_len", 0)) or 0) // SYNC_TOKENS_PER_SEGMENT)
    sync_frames = count * int(window_seconds * 25)
    if source == "text":
        clip_frames = sync_frames = segments = 0
    elif source == "image":
        sync_frames = segments = 0
    payload = timing_payload(num_frames, fps, duration, clip_frames, sync_frames, segments,
                             requested_duration=requested_duration, source=source, clip_length=clip_length,
                             timestamps=timestamps, mask_away_clip=mask_away_clip)
    if spans and payload[TIMING_KEY]:
        payload[TIMING_KEY][0]["windows"] = spans
    return payload


def _window_spans(plan: Any) -> list[list[float]]:
    """[start, end] seconds of every window of a windowed plan (empty for one pass)."""
    if plan is None or getattr(plan, "is_single", True):
        return []
    spans = []
    for index in range(int(plan.num_windows)):
        start = _finite(plan.start_seconds(index))
        if start is not None:
            spans.append([round(start, DECIMALS), round(start + float(plan.window_duration), DECIMALS)])
    return spans


# ---- waveform ------------------------------------------------------------------------------------------------
def column_edges(num_samples: int, columns: int) -> list[int]:
    """Start of every column and the end: column k covers samples [k*T//C, (k+1)*T//C) (as js/lib/waveform.js)."""
    return [k * num_samples // columns for k in range(columns + 1)]


def _reduce_columns(low: torch.Tensor, high: torch.Tensor, power: torch.Tensor, edges: list[int]
                    ) -> tuple[list[float], list[float], list[float]]:
    """Per column: min of ``low``, max of ``high``, mean of ``power``; a block of columns at a time, each column
    gathered into one padded row (its last sample repeated, masked out of the mean)."""
    starts = torch.tensor(edges[:-1], dtype=torch.long)
    ends = torch.tensor(edges[1:], dtype=torch.long)
    width = int((ends - starts).max())
    block = max(1, COLUMN_BLOCK_SAMPLES // max(1, width))
    lows: list[float] = []
    highs: list[float] = []
    powers: list[float] = []
    offsets = torch.arange(width, dtype=torch.long)
    for first in range(0, len(starts), block):
        s, e = starts[first:first + block, None], ends[first:first + block, None]
        index = s + offsets
        valid = index < e
        index = torch.minimum(index, e - 1)
        lows += low[index].amin(dim=1).tolist()
        highs += high[index].amax(dim=1).tolist()
        powers += ((power[index] * valid).sum(dim=1) / valid.sum(dim=1)).tolist()
    return lows, highs, powers


def waveform_peaks(samples: torch.Tensor, columns: int = DEFAULT_COLUMNS) -> dict[str, Any]:
    """Min/max envelope over all channels and RMS per column of one waveform [C, T] (or [T]).

    ``columns`` is capped at T so no column is empty. Non-finite samples count as silence.
    """
    x = torch.as_tensor(samples).detach()
    if x.ndim == 1:
        x = x.unsqueeze(0)
    if x.ndim != 2:
        raise ValueError(f"waveform: expected [channels, samples] or [samples], got shape {tuple(x.shape)}")
    x = torch.nan_to_num(x.to(device="cpu", dtype=torch.float32), nan=0.0, posinf=0.0, neginf=0.0)
    channels, length = int(x.shape[0]), int(x.shape[1])
    cols = max(0, min(int(columns), MAX_COLUMNS, length))
    if channels == 0 or cols == 0:
        return {"peaks": [], "rms": [], "peak": 0.0, "channels": channels, "num_samples": length}
    low = x.amin(dim=0)
    high = x.amax(dim=0)
    power = x.square().mean(dim=0)
    lows, highs, powers = _reduce_columns(low, high, power, column_edges(length, cols))
    peaks = [[round(a, DECIMALS), round(b, DECIMALS)] for a, b in zip(lows, highs, strict=True)]
    rms = [round(math.sqrt(max(p, 0.0)), DECIMALS) for p in powers]
    peak = max(float(low.min().abs()), float(high.max().abs()))
    return {"peaks": peaks, "rms": rms, "peak": round(peak, 6), "channels": channels, "num_samples": length}


def waveform_payload(waveform: Any, sample_rate: int, columns: int = DEFAULT_COLUMNS, *,
                     labels: Sequence[str] | None = None, max_items: int = MAX_WAVEFORMS
                     ) -> dict[str, list[dict[str, Any]]]:
    """``{"mmaudio_waveform": [entry, ...]}``, one entry per batch row (at most ``max_items``).

    ``waveform``: [C, T] (one sample), [B, C, T] (a ComfyUI AUDIO batch) or [T]. Each entry: ``peaks`` (a
    [min, max] pair per column), ``rms``, ``sample_rate``, ``duration`` (T / rate), ``num_samples``,
    ``channels``, ``peak`` (max |sample|), ``index``, ``batch_size`` and ``label`` (``labels[index]`` or None).
    """
    if waveform is None:
        return {WAVEFORM_KEY: []}
    x = torch.as_tensor(waveform).detach()
    if x.ndim in (1, 2):
        x = x.reshape(1, -1, x.shape[-1]) if x.ndim == 2 else x.reshape(1, 1, -1)
    if x.ndim != 3:
        raise ValueError(f"waveform: expected [batch, channels, samples] or [channels, samples], got shape "
                         f"{tuple(x.shape)}")
    rate = _finite(sample_rate, minimum=0.0)
    batch = int(x.shape[0])
    entries = []
    for index in range(min(batch, max(0, int(max_items)))):
        summary = waveform_peaks(x[index], columns)
        label = labels[index] if labels is not None and index < len(labels) else None
        entries.append({
            "version": PAYLOAD_VERSION,
            "index": index,
            "batch_size": batch,
            **summary,
            "sample_rate": int(rate) if rate is not None and rate == int(rate) else rate,
            "duration": summary["num_samples"] / rate if rate is not None else None,
            "label": None if label is None else str(label),
        })
    return {WAVEFORM_KEY: entries}


def audio_waveform_payload(audio: Mapping[str, Any], columns: int = DEFAULT_COLUMNS, *,
                           labels: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """:func:`waveform_payload` of a ComfyUI AUDIO (``{"waveform": [B, C, T], "sample_rate": int}``)."""
    return waveform_payload(audio["waveform"], audio["sample_rate"], columns, labels=labels)


def merge_payloads(*payloads: Mapping[str, list] | None) -> dict[str, list]:
    """One ``ui`` dict from several (lists under the same key are concatenated); None entries are skipped."""
    merged: dict[str, list] = {}
    for payload in payloads:
        for key, value in (payload or {}).items():
            merged.setdefault(key, []).extend(value)
    return merged
