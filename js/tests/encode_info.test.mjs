import assert from "node:assert/strict";
import { test } from "node:test";

import { describeEncode } from "../lib/encode_info.js";
import { parseTiming } from "../lib/payload.js";
import { computeTiming } from "../lib/timing.js";

const NOTHING = { images: false, video: false };
const IMAGES = { images: true, video: false };

function payloadFor(numFrames, fps, duration) {
  const t = computeTiming({ numFrames, fps, duration });
  return parseTiming({
    mmaudio_timing: [{ source: t.source, num_frames: numFrames, fps, clip_length: t.clipLength,
      requested_duration: duration > 0 ? duration : null, duration: t.duration, clip_frames: t.clipFrames,
      sync_frames: t.syncFrames, segments: t.segments, cut: t.cut }],
  });
}

test("nothing connected: text-to-audio at the duration, or 8 s", () => {
  const info = describeEncode({ duration: 0, links: NOTHING });
  assert.equal(info.level, "ok");
  assert.match(info.text, /text-to-audio/);
  assert.equal(info.text, "no clip (text-to-audio) → 8.00 s");
  assert.match(describeEncode({ duration: 4, links: NOTHING }).text, /4\.00 s/);
  assert.doesNotMatch(info.text, /CLIP|Synchformer/); // nothing is read from a clip
});

test("a clip connected, not run yet: the requested counts", () => {
  const info = describeEncode({ duration: 5, links: IMAGES });
  assert.equal(info.level, "ok");
  assert.match(info.text, /5\.00 s requested/);
  assert.match(info.text, /CLIP 8 fps × 40/);
  assert.match(info.text, /Synchformer 25 fps × 125 \(14 segments\)/);
  assert.match(describeEncode({ duration: 0, links: IMAGES, fps: 24 }).text, /full length/);
});

test("too short: error colour", () => {
  for (const links of [NOTHING, IMAGES]) {
    const info = describeEncode({ duration: 0.5, links });
    assert.equal(info.level, "error");
    assert.match(info.text, /0\.64/);
  }
});

test("after a run: the backend's numbers, in the documented format", () => {
  const timing = payloadFor(80, 10, 0);
  const info = describeEncode({ duration: 0, links: IMAGES, timing });
  assert.equal(info.level, "ok");
  assert.equal(info.text, "80 frames @ 10 fps → 7.92 s · CLIP 8 fps × 63 · Synchformer 25 fps × 198 (23 segments)");
});

test("after a run, a longer duration than the clip: warning colour", () => {
  const timing = payloadFor(96, 24, 0);
  const info = describeEncode({ duration: 6, links: IMAGES, timing });
  assert.equal(info.level, "warn");
  assert.ok(info.notes.some((n) => /cut to/.test(n)));
  assert.match(info.text, /cut from 6\.00 s$/);
  // the backend's own cut report
  const ran = describeEncode({ duration: 6, links: IMAGES, timing: payloadFor(96, 24, 6) });
  assert.equal(ran.level, "warn");
});

test("after a run, a shorter duration: recomputed from the last clip", () => {
  const timing = payloadFor(96, 24, 0);
  const info = describeEncode({ duration: 2, links: IMAGES, timing });
  assert.equal(info.level, "ok");
  assert.match(info.text, /96 frames @ 24 fps → 2\.00 s · CLIP 8 fps × 16 · Synchformer 25 fps × 50 \(5 segments\)/);
  assert.ok(info.notes.some((n) => /last run/.test(n)));
});

test("a payload from another source kind is ignored", () => {
  const timing = payloadFor(96, 24, 0);
  const info = describeEncode({ duration: 0, links: NOTHING, timing });
  assert.match(info.text, /text-to-audio/);
});

test("mask_away_clip and a linked duration", () => {
  assert.match(describeEncode({ duration: 3, links: IMAGES, maskAwayClip: true }).text, /masked/);
  assert.match(describeEncode({ duration: null, durationLinked: true, links: IMAGES }).text, /link/);
  const timing = payloadFor(96, 24, 2);
  assert.match(describeEncode({ duration: null, durationLinked: true, links: IMAGES, timing }).text, /2\.00 s/);
});

test("decoded timestamps: an estimate from the clip length", () => {
  const timing = parseTiming({ mmaudio_timing: [{ source: "video", num_frames: 120, fps: 24.5, timestamps: true,
    clip_length: 4.9, duration: 4.88, clip_frames: 39, sync_frames: 122, segments: 14 }] });
  const info = describeEncode({ duration: 3, links: { images: false, video: true }, timing });
  assert.match(info.text, /≈/);
  assert.match(info.text, /3\.00 s/);
});

test("never throws", () => {
  for (const state of [undefined, null, {}, { duration: "x" }, { links: null }, { timing: {} },
    { timing: { source: "video" }, duration: 3, links: IMAGES }, { duration: Infinity, links: 7 }]) {
    const info = describeEncode(state);
    assert.equal(typeof info.text, "string");
    assert.ok(["ok", "warn", "error"].includes(info.level));
  }
});

test("a long soundtrack shows its window plan", () => {
  const windows = [[0, 8], [5.95, 13.95], [11.9, 19.9], [17.86, 25.86], [23.81, 31.81], [29.76, 37.76],
    [35.71, 43.71], [41.66, 49.66], [42, 50]];
  const timing = parseTiming({
    mmaudio_timing: [{ source: "video", num_frames: 1200, fps: 24, clip_length: 50, duration: 50,
      clip_frames: 9 * 64, sync_frames: 9 * 200, segments: 9 * 24, windows }],
  });
  assert.deepEqual(timing.windows, windows);
  const info = describeEncode({ duration: 0, links: { images: false, video: true }, timing });
  assert.match(info.text, /9 windows of 8 s from 0, 5\.95, 11\.9, 17\.86, 23\.81, 29\.76, … s/);
  assert.ok(info.notes.some((n) => /own part of the clip/.test(n)));
  const shortRun = payloadFor(120, 24, 0);
  assert.deepEqual(shortRun.windows, []);
  assert.doesNotMatch(describeEncode({ duration: 0, links: IMAGES, timing: shortRun }).text, /windows/);
  const estimated = describeEncode({ duration: 30, links: NOTHING });
  assert.ok(estimated.notes.some((n) => /overlapping 8 s windows/.test(n)));
});
