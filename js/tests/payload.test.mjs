import assert from "node:assert/strict";
import { test } from "node:test";

import { MAX_ENTRIES, TIMING_KEY, WAVEFORM_KEY, parseTiming, parseWaveforms } from "../lib/payload.js";

const GARBAGE = [undefined, null, 0, "", "text", [], [1, 2], true, NaN, { [TIMING_KEY]: null },
  { [TIMING_KEY]: "x" }, { [TIMING_KEY]: [null, 1, "a", []] }, { [TIMING_KEY]: [{}] },
  { [TIMING_KEY]: [{ duration: "NaN" }] }, { [TIMING_KEY]: [{ duration: -3 }] }, { [WAVEFORM_KEY]: {} },
  { [WAVEFORM_KEY]: [{ peaks: "no" }] }, { [WAVEFORM_KEY]: [null, 3, []] }, { images: [{ filename: "a.png" }] }];

test("malformed messages parse to nothing, without throwing", () => {
  for (const message of GARBAGE) {
    assert.equal(parseTiming(message), null, JSON.stringify(message));
    assert.deepEqual(parseWaveforms(message), [], JSON.stringify(message));
  }
});

test("a timing entry", () => {
  const t = parseTiming({
    [TIMING_KEY]: [{ version: 1, source: "video", num_frames: 240, fps: 24, timestamps: false, clip_length: 10,
      requested_duration: 12, duration: 9.96, clip_frames: 79, sync_frames: 249, segments: 30, cut: true,
      mask_away_clip: false }],
  });
  assert.deepEqual(t, { source: "video", numFrames: 240, fps: 24, timestamps: false, clipLength: 10,
    requested: 12, duration: 9.96, clipFrames: 79, syncFrames: 249, segments: 30, cut: true,
    maskAwayClip: false, windows: [] });
});

test("timing entries: bad fields become null or 0, the last valid entry wins", () => {
  const t = parseTiming({
    [TIMING_KEY]: [{ duration: 3, source: "video", num_frames: 90, fps: 30 },
      { duration: 5, source: "weird", num_frames: 2.5, fps: -1, clip_frames: "x", cut: "yes" }, { duration: null }],
  });
  assert.equal(t.duration, 5);
  assert.equal(t.numFrames, null);
  assert.equal(t.fps, null);
  assert.equal(t.source, "text");
  assert.equal(t.clipFrames, 0);
  assert.equal(t.cut, false);
});

test("waveform entries", () => {
  const list = parseWaveforms({
    [WAVEFORM_KEY]: [
      { index: 0, batch_size: 2, peaks: [[-0.5, 0.5], [0.2, -0.1], "bad", [NaN, 1]], rms: [0.1, 0.2, 0.3, 0.4],
        sample_rate: 44100, duration: 8, num_samples: 352800, channels: 1, peak: 0.5, label: "seed 1" },
      { peaks: [[-1, 1]], sample_rate: 16000, num_samples: 8000, rms: [1, 2] },
      { peaks: "nope" },
    ],
  });
  assert.equal(list.length, 2);
  const [a, b] = list;
  assert.deepEqual(Array.from(a.min), [-0.5, -0.1, 0, 0].map(Math.fround));
  assert.deepEqual(Array.from(a.max), [0.5, 0.2, 0, 1].map(Math.fround));
  assert.equal(a.rms.length, 4);
  assert.equal(a.label, "seed 1");
  assert.equal(b.duration, 0.5);
  assert.equal(b.index, 1);
  assert.equal(b.peak, 1);
  assert.equal(b.rms.length, 1);
  assert.equal(b.label, null);
});

test("entry count is capped", () => {
  const many = { [WAVEFORM_KEY]: Array.from({ length: 200 }, () => ({ peaks: [[0, 0]] })) };
  assert.equal(parseWaveforms(many).length, MAX_ENTRIES);
});

test("window spans are kept only when they make sense", () => {
  const t = parseTiming({ mmaudio_timing: [{ duration: 20, windows: [[0, 8], [6, 14], [12, 20], [5, 3], "x",
    [Number.NaN, 2], [1]] }] });
  assert.deepEqual(t.windows, [[0, 8], [6, 14], [12, 20]]);
  assert.deepEqual(parseTiming({ mmaudio_timing: [{ duration: 4 }] }).windows, []);
});
