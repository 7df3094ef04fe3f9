"""Frame choice by timestamp, resizing, input checks and chunking of mmaudio.features.frames."""

from __future__ import annotations

import logging
import math
from fractions import Fraction

import pytest
import torch

from mmaudio import engine
from mmaudio.errors import InvalidInputError
from mmaudio.features import frames as fr


def stamped_clip(num_frames: int, height: int = 36, width: int = 52) -> torch.Tensor:
    """IMAGE batch whose frame i is flat grey (i + 10) / 255: the picked pixels tell which frame was used."""
    values = (torch.arange(num_frames, dtype=torch.float32) + 10.0) / 255.0
    return values.view(-1, 1, 1, 1).expand(num_frames, height, width, 3).contiguous()


def expected_indices(num_frames: int, fps: float, rate: float, slots: int) -> list[int]:
    """Independent statement of the rule: slot k takes the first frame whose time reaches the k-th accumulated
    target (1/rate added k times in double precision); frame i's time is i/fps rounded once."""
    times = [float(Fraction(i) / Fraction(fps).limit_denominator(1001)) for i in range(num_frames)]
    out, target = [], 0.0
    for _ in range(slots):
        out.append(next(i for i, t in enumerate(times) if t >= target))
        target += 1.0 / rate
    return out


@pytest.mark.parametrize("fps", [12, 24, 30])
def test_same_clip_at_several_rates_picks_frames_by_timestamp(fps: int) -> None:
    seconds = 3
    clip = stamped_clip(fps * seconds)
    prepared = fr.select_and_prepare(clip, float(fps), duration=2.0, chunk_size=5)
    plan = prepared.plan
    assert plan.duration == 2.0
    assert len(plan.clip_indices) == 16 and len(plan.sync_indices) == 50
    assert list(plan.clip_indices) == expected_indices(len(clip), fps, 8.0, 16)
    assert list(plan.sync_indices) == expected_indices(len(clip), fps, 25.0, 50)
    for rate, indices, slot_times in ((8.0, plan.clip_indices, plan.clip_times),
                                      (25.0, plan.sync_indices, plan.sync_times)):
        for k, (i, t) in enumerate(zip(indices, slot_times, strict=True)):
            assert math.isclose(t, k / rate, abs_tol=1e-12)
            assert i / fps >= t - 1e-12  # never a frame from before the slot time
            assert (i - 1) / fps < t + 1e-12 or i == 0  # and the first one that reaches it
    # The pixels carry the frame index through the resize (flat frames stay flat).
    clip_values = prepared.clip_u8[:, 0, 0, 0].long() - 10
    sync_values = prepared.sync_u8[:, 0, 0, 0].long() - 10
    assert clip_values.tolist() == list(plan.clip_indices)
    assert sync_values.tolist() == list(plan.sync_indices)
    # Time, not frame count, decides: slot k of the 8 fps stream is ~k/8 s into the clip at any source rate.
    assert [round(i / fps * 8) for i in plan.clip_indices] == list(range(16))


def test_accumulated_target_skips_exact_frame_like_the_reference() -> None:
    # 20 additions of 0.04 give 0.8000000000000002 > 0.8, so at 30 fps frame 24 (t = 0.8) is skipped for slot 20.
    plan = fr.plan_frames(90, 30.0, duration=2.0)
    assert plan.sync_indices[20] == 25
    assert plan.sync_times[20] > 0.8


def test_ntsc_rate_float_and_fraction_agree() -> None:
    a = fr.plan_frames(100, 30000 / 1001, duration=3.0)
    b = fr.plan_frames(100, Fraction(30000, 1001), duration=3.0)
    c = fr.plan_frames(100, times=[float(Fraction(i * 1001, 30000)) for i in range(100)], duration=3.0)
    assert a.clip_indices == b.clip_indices == c.clip_indices
    assert a.sync_indices == b.sync_indices == c.sync_indices


@pytest.mark.parametrize("fps", [8, 12, 16, 23.976, 24, 25, 29.97, 30, 60])
def test_default_duration_is_the_clip_length(fps: float) -> None:
    n = round(fps * 4)
    plan = fr.plan_frames(n, fps)
    length = n / fps
    assert length - 1 / 8 <= plan.duration <= length
    assert len(plan.clip_indices) == int(8 * plan.duration)
    assert len(plan.sync_indices) == int(25 * plan.duration)
    assert max(plan.sync_indices) <= n - 1


def test_requested_duration_longer_than_clip_is_cut_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mmaudio.features.frames"):
        plan = fr.plan_frames(60, 24.0, duration=5.0)
    assert plan.duration < 2.5 and plan.requested_duration == 5.0
    assert len(plan.sync_indices) == int(25 * plan.duration)
    assert any("longer than the frames cover" in r.getMessage() for r in caplog.records)


def test_frames_after_the_duration_are_ignored() -> None:
    short = fr.plan_frames(31, 15.0, duration=2.0)
    long = fr.plan_frames(300, 15.0, duration=2.0)
    assert short.clip_indices == long.clip_indices and short.sync_indices == long.sync_indices


def test_chunked_equals_unchunked_and_reads_each_frame_once() -> None:
    gen = torch.Generator().manual_seed(1)
    clip = torch.rand(40, 45, 80, 3, generator=gen)
    plan = fr.plan_frames(40, 16.0)
    one = fr.prepare_frames(clip, plan, chunk_size=1)
    many = fr.prepare_frames(clip, plan, chunk_size=1000)
    assert one.clip_u8.equal(many.clip_u8) and one.sync_u8.equal(many.sync_u8)

    class Recording(list):
        def __init__(self, items: list[torch.Tensor]) -> None:
            super().__init__(items)
            self.reads: list[int] = []

        def __getitem__(self, i):  # type: ignore[override]
            self.reads.append(i)
            return super().__getitem__(i)

    frames = Recording(list(clip))
    sparse = fr.plan_frames(40, 60.0)  # a 60 fps source: only some frames are needed
    fr.prepare_frames(frames, sparse, chunk_size=4)
    assert sorted(frames.reads) == sparse.source_indices
    assert len(sparse.source_indices) < 40


def test_uint8_float_gray_and_rgba_inputs_agree() -> None:
    gen = torch.Generator().manual_seed(2)
    u8 = torch.randint(0, 256, (20, 30, 40, 3), generator=gen, dtype=torch.uint8)
    plan = fr.plan_frames(20, 25.0)
    base = fr.prepare_frames(u8, plan)
    as_float = fr.prepare_frames(u8.float() / 255.0, plan)
    rgba = fr.prepare_frames(torch.cat([u8, torch.zeros_like(u8[..., :1])], dim=-1), plan)
    assert base.clip_u8.equal(as_float.clip_u8) and base.sync_u8.equal(as_float.sync_u8)
    assert base.clip_u8.equal(rgba.clip_u8) and base.sync_u8.equal(rgba.sync_u8)
    gray = u8[..., :1]
    g1 = fr.prepare_frames(gray, plan)
    g2 = fr.prepare_frames(gray[..., 0].float() / 255.0, plan)
    g3 = fr.prepare_frames(gray.expand(-1, -1, -1, 3), plan)
    assert g1.clip_u8.equal(g3.clip_u8) and g2.sync_u8.equal(g3.sync_u8)


def test_sync_geometry() -> None:
    assert fr.sync_resize_geometry(480, 640) == ((224, 298), (0, 37))
    assert fr.sync_resize_geometry(1080, 1920) == ((224, 398), (0, 87))
    assert fr.sync_resize_geometry(1920, 1080) == ((398, 224), (87, 0))
    out = fr.resize_for_sync(torch.zeros(2, 1080, 1920, 3, dtype=torch.uint8))
    assert out.shape == (2, 3, 224, 224)
    assert fr.resize_for_clip(torch.zeros(1, 50, 70, 3, dtype=torch.uint8)).shape == (1, 3, 384, 384)


def test_single_image_stands_for_the_whole_duration() -> None:
    image = stamped_clip(1)
    prepared = fr.select_and_prepare(image, None, duration=3.0)
    assert prepared.plan.is_still
    assert prepared.plan.clip_indices == (0,) * 24
    assert prepared.sync_u8.shape[0] == 0
    assert prepared.duration == 3.0
    with pytest.raises(InvalidInputError, match="duration"):
        fr.select_and_prepare(image, 24.0)


class _StubClip(torch.nn.Module):
    """Stands in for CLIP: the 'embedding' of a frame is its mean pixel value, counting the frames it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def encode_images(self, x: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        self.seen += x.shape[0]
        return x.mean(dim=(1, 2, 3)).unsqueeze(-1).expand(-1, 1024)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        return torch.zeros(len(prompts), 77, 1024)

    def memory_for_images(self, batch: int) -> int:
        return 0

    def memory_for_text(self, prompts: int) -> int:
        return 0


class _UnusedSynchformer(torch.nn.Module):
    """Stands in for Synchformer where it must not run: any forward fails the test."""

    dtype = torch.float32

    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = torch.nn.Parameter(torch.zeros(1))

    def forward(self, segments: torch.Tensor) -> torch.Tensor:
        raise AssertionError("a still image has no Synchformer features")

    def memory_for_segments(self, batch: int, dtype: torch.dtype | None = None) -> int:
        return 0


class _RecordingRuntime(engine.DirectRuntime):
    """The engine's CPU runtime, noting the stages entered, the units planned and every progress report."""

    def __init__(self) -> None:
        super().__init__("cpu")
        self.stages: list[str] = []
        self.units: dict[str, int] = {}
        self.reports: dict[str, list[tuple[int, int]]] = {}

    def stage(self, name, models, memory_required=0):  # type: ignore[no-untyped-def]
        self.stages.append(name)
        return super().stage(name, models, memory_required)

    def plan(self, units) -> None:  # type: ignore[no-untyped-def]
        self.units.update(units)

    def progress(self, stage: str, done: int, total: int) -> None:
        self.reports.setdefault(stage, []).append((done, total))


def test_extractor_still_image_encodes_once_and_has_no_sync() -> None:
    clip = _StubClip()
    cpu = torch.device("cpu")
    models = engine.FeatureModels(clip=engine.Placed(clip, cpu, torch.float32),  # type: ignore[arg-type]
                                  synchformer=engine.Placed(_UnusedSynchformer(), cpu, torch.float32))  # type: ignore[arg-type]
    runtime = _RecordingRuntime()
    image = stamped_clip(1)
    conditions = engine.encode_conditions(models, engine.VisualSource.from_images(image), engine.parse_prompts("rain"),
                                          duration=2.0, mask_away_clip=False, runtime=runtime)
    assert conditions.source == "image" and conditions.duration == 2.0
    assert conditions.sync_features is None and conditions.clip_features is not None
    assert conditions.clip_features.shape == (1, 16, 1024)
    assert clip.seen == 1  # the one frame, once, though it fills all 16 slots
    want = fr.clip_input(fr.prepare_frames(image, fr.plan_frames(1, duration=2.0)).clip_u8[:1]).mean()
    torch.testing.assert_close(conditions.clip_features, want.expand(1, 16, 1024))
    assert "sync" not in runtime.stages and runtime.units.get("sync", 0) == 0
    calls = runtime.reports["clip"]
    assert calls and calls[-1][0] == calls[-1][1]


def test_progress_callback_can_interrupt() -> None:
    class StopError(Exception):
        pass

    def stop(done: int, total: int) -> None:
        raise StopError

    with pytest.raises(StopError):
        fr.select_and_prepare(stamped_clip(30), 25.0, progress=stop)


@pytest.mark.parametrize(
    ("frames", "fps", "duration", "needle"),
    [
        (torch.zeros(0, 8, 8, 3), 25.0, None, "frames"),
        (torch.zeros(8, 8), 25.0, None, "frames"),
        (torch.zeros(1, 8, 8, 8, 3), 25.0, None, "frames"),
        (torch.zeros(30, 8, 8, 2), 25.0, None, "channels"),
        (torch.zeros(30, 8, 8, 3, dtype=torch.int32), 25.0, None, "dtype"),
        (torch.zeros(30, 8, 8, 3), 0.0, None, "fps"),
        (torch.zeros(30, 8, 8, 3), -25.0, None, "fps"),
        (torch.zeros(30, 8, 8, 3), float("nan"), None, "fps"),
        (torch.zeros(30, 8, 8, 3), float("inf"), None, "fps"),
        (torch.zeros(30, 8, 8, 3), None, None, "fps"),
        (torch.zeros(10, 8, 8, 3), 25.0, None, "segment"),
        (torch.zeros(100, 8, 8, 3), 25.0, 0.5, "segment"),
        (torch.zeros(100, 8, 8, 3), 25.0, -1.0, "duration"),
        (torch.zeros(100, 8, 8, 3), 25.0, float("nan"), "duration"),
        ([torch.zeros(8, 8, 3), torch.zeros(9, 8, 3)], 25.0, None, "same size"),
        ("video.mp4", 25.0, None, "frames"),
    ],
)
def test_bad_inputs_are_rejected_before_any_work(frames, fps, duration, needle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInputError, match=needle):
        fr.select_and_prepare(frames, fps, duration=duration)


def test_timestamps_must_match_and_be_ordered() -> None:
    with pytest.raises(InvalidInputError, match="timestamps"):
        fr.plan_frames(3, times=[0.0, 0.1])
    with pytest.raises(InvalidInputError, match="timestamps"):
        fr.plan_frames(3, times=[0.0, 0.2, 0.1])
