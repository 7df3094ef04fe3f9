// Rules of js/lib/timing.js (their parity with the Python backend is checked by tests/test_ui_payloads.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  CLIP_FPS,
  MIN_DURATION_S,
  SYNC_FPS,
  SYNC_SEGMENT,
  SYNC_STEP,
  TRAINING_DURATION_S,
  computeTiming,
  doubleToFraction,
  exactRate,
  lengthsForDuration,
  limitDenominator,
  requestedTiming,
  sampleAndHoldCount,
} from "../lib/timing.js";

test("doubleToFraction is exact", () => {
  for (const x of [0.1, 1 / 3, 29.97002997002997, 1e-300, 5e-324, 123456789.125, 2 ** 60]) {
    const { num, den } = doubleToFraction(x);
    // den is a power of two (a double is a dyadic rational): x = num * 2^-bits exactly
    assert.equal(den & (den - 1n), 0n);
    const bits = den.toString(2).length - 1;
    assert.equal(Number(num) * 2 ** -Math.min(bits, 1074) * 2 ** -(bits - Math.min(bits, 1074)), x);
  }
  assert.deepEqual(doubleToFraction(0.5), { num: 1n, den: 2n });
  assert.deepEqual(doubleToFraction(24), { num: 24n, den: 1n });
  assert.throws(() => doubleToFraction(NaN), RangeError);
});

test("limitDenominator picks the closest fraction", () => {
  const pi = doubleToFraction(Math.PI);
  assert.deepEqual(limitDenominator(pi.num, pi.den, 1000n), { num: 355n, den: 113n });
  assert.deepEqual(limitDenominator(pi.num, pi.den, 10n), { num: 22n, den: 7n });
  assert.deepEqual(limitDenominator(3n, 4n, 1000n), { num: 3n, den: 4n });
  // brute force over small denominators
  for (const x of [0.3183, 2.718281828, 29.97, 0.007]) {
    const f = doubleToFraction(x);
    const got = limitDenominator(f.num, f.den, 50n);
    let best = Infinity;
    for (let q = 1; q <= 50; q++) best = Math.min(best, Math.abs(Math.round(x * q) / q - x));
    assert.ok(Math.abs(Number(got.num) / Number(got.den) - x) <= best + 1e-15, `${x}`);
  }
});

test("exactRate snaps NTSC floats and keeps other rates exact", () => {
  const ntsc = exactRate(30000 / 1001);
  assert.equal(ntsc.num, 30000n);
  assert.equal(ntsc.den, 1001n);
  assert.equal(ntsc.frameTime(1001), (1001 * 1001) / 30000);
  assert.equal(ntsc.value, 30000 / 1001);
  const odd = exactRate(Math.PI * 10);
  assert.equal(odd.value, Math.PI * 10);
  assert.equal(odd.frameTime(7), 7 / (Math.PI * 10));
  for (const bad of [0, -1, NaN, Infinity, null, "24", undefined]) assert.equal(exactRate(bad), null);
});

test("sample-and-hold fills every slot from the latest frame", () => {
  // 10 fps frames, 25 fps slots up to 1 s: slot times 0, 0.04, ... all <= 1.0 reachable by frame t <= 1.0
  const frameTime = (i) => i / 10;
  const count = sampleAndHoldCount(11, frameTime, 25, 1.0);
  let manual = 0;
  let target = 0;
  for (let i = 0; i < 11; i++) {
    while (i / 10 >= target) {
      manual++;
      target += 1 / 25;
    }
  }
  assert.equal(count, manual);
  assert.equal(sampleAndHoldCount(0, frameTime, 25, 1), 0);
});

test("sequence lengths follow the backend formulas", () => {
  for (const d of [0.64, 1, 2.5, 7.92, 8, 10, 12.34, 300]) {
    const l = lengthsForDuration(d);
    assert.equal(l.clipFrames, Math.trunc(d * CLIP_FPS));
    assert.equal(l.syncFrames, Math.trunc(d * SYNC_FPS));
    assert.equal(l.segments, Math.floor((d * SYNC_FPS - SYNC_SEGMENT) / SYNC_STEP) + 1);
    assert.equal(l.syncTokens, 8 * l.segments);
  }
  assert.equal(lengthsForDuration(MIN_DURATION_S - 0.001), null);
  assert.equal(lengthsForDuration(NaN), null);
});

test("text-to-audio: the duration, or the training length", () => {
  const t = computeTiming({ numFrames: 0, duration: 0 });
  assert.equal(t.ok, true);
  assert.equal(t.source, "text");
  assert.equal(t.duration, TRAINING_DURATION_S);
  assert.equal(computeTiming({ duration: 3 }).duration, 3);
  const short = computeTiming({ numFrames: 0, duration: 0.5 });
  assert.equal(short.ok, false);
  assert.equal(short.tooShort, true);
  assert.match(short.error, /0\.64/);
});

test("a still image needs a duration and feeds CLIP only", () => {
  assert.equal(computeTiming({ numFrames: 1, duration: 0 }).ok, false);
  const t = computeTiming({ numFrames: 1, duration: 4 });
  assert.equal(t.ok, true);
  assert.equal(t.source, "image");
  assert.equal(t.clipFrames, 32);
  assert.equal(t.syncFrames, 0);
  assert.equal(t.segments, 0);
  assert.equal(computeTiming({ numFrames: 1, duration: 0.3 }).tooShort, true);
});

test("a clip: its length, never longer than its frames cover", () => {
  const full = computeTiming({ numFrames: 96, fps: 24, duration: 0 });
  assert.equal(full.ok, true);
  assert.ok(full.duration <= 96 / 24);
  assert.equal(full.clipLength, 4);
  assert.equal(full.cut, false);

  const longer = computeTiming({ numFrames: 96, fps: 24, duration: 6 });
  assert.equal(longer.cut, true);
  assert.ok(longer.duration <= 4);
  assert.equal(longer.requested, 6);

  const shorter = computeTiming({ numFrames: 96, fps: 24, duration: 2 });
  assert.equal(shorter.cut, false);
  assert.equal(shorter.duration, 2);
  assert.equal(shorter.clipFrames, 16);
  assert.equal(shorter.syncFrames, 50);
  assert.equal(shorter.segments, 5);

  const tiny = computeTiming({ numFrames: 10, fps: 24, duration: 0 });
  assert.equal(tiny.ok, false);
  assert.equal(tiny.tooShort, true);

  assert.equal(computeTiming({ numFrames: 50, fps: null, duration: 2 }).ok, false);
});

test("only a clip length (decoded timestamps): an estimate", () => {
  const t = computeTiming({ numFrames: 50, fps: null, duration: 0, clipLength: 5 });
  assert.equal(t.ok, true);
  assert.equal(t.estimate, true);
  assert.equal(t.duration, 5);
  const cut = computeTiming({ numFrames: 50, duration: 9, clipLength: 5 });
  assert.equal(cut.cut, true);
  assert.equal(cut.duration, 5);
});

test("invariants over many clips", () => {
  for (const fps of [8, 10, 12.5, 23.976, 24, 25, 29.97, 30000 / 1001, 60, 7.3]) {
    for (const n of [2, 17, 50, 151, 480]) {
      for (const duration of [0, 0.64, 1.5, 4, 9.5]) {
        const t = computeTiming({ numFrames: n, fps, duration });
        if (!t.ok) {
          assert.ok(t.error, "an error says why");
          continue;
        }
        const target = duration > 0 ? duration : t.clipLength;
        assert.ok(t.duration <= target, `${n}@${fps} ${duration}`);
        assert.ok(t.duration >= MIN_DURATION_S);
        assert.equal(t.cut, duration > 0 && t.duration < duration);
        assert.equal(t.clipFrames, Math.trunc(t.duration * CLIP_FPS));
        assert.ok(t.segments >= 1);
      }
    }
  }
});

test("before the clip is known: the requested duration's counts", () => {
  const t = requestedTiming(5);
  assert.equal(t.ok, true);
  assert.equal(t.pending, true);
  assert.equal(t.clipFrames, 40);
  assert.equal(t.syncFrames, 125);
  assert.equal(requestedTiming(0).duration, null);
  assert.equal(requestedTiming(0.2).ok, false);
});

test("garbage in, no exception out", () => {
  for (const args of [undefined, {}, { numFrames: "x" }, { numFrames: -3, fps: -1 }, { numFrames: 2.5, fps: 24 },
    { numFrames: 100, fps: NaN, duration: Infinity }, { numFrames: 1e9 * 0 + 3, fps: 1e-300 }]) {
    const t = computeTiming(args);
    assert.equal(typeof t.ok, "boolean");
  }
});
