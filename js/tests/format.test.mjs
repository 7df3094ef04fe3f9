import assert from "node:assert/strict";
import { test } from "node:test";

import { formatFps, formatPeakDb, formatSampleRate, formatSeconds, plural, trimNumber } from "../lib/format.js";

test("numbers", () => {
  assert.equal(trimNumber(24), "24");
  assert.equal(trimNumber(30000 / 1001), "29.97");
  assert.equal(trimNumber(23.976), "23.976");
  assert.equal(trimNumber(NaN), "–");
  assert.equal(formatFps(25), "25 fps");
  assert.equal(formatFps(-1), "– fps");
  assert.equal(formatSampleRate(44100), "44.1 kHz");
  assert.equal(formatSampleRate(16000), "16 kHz");
  assert.equal(formatSampleRate(800), "800 Hz");
  assert.equal(formatSampleRate(null), "– Hz");
});

test("seconds", () => {
  assert.equal(formatSeconds(8), "8.00 s");
  assert.equal(formatSeconds(7.92), "7.92 s");
  assert.equal(formatSeconds(65.5), "1:05.50");
  assert.equal(formatSeconds(59.999), "1:00.00");
  assert.equal(formatSeconds(3723), "1:02:03.00");
  assert.equal(formatSeconds(undefined), "–");
});

test("levels and plurals", () => {
  assert.equal(formatPeakDb(1), "0.0 dBFS");
  assert.equal(formatPeakDb(0.5), "-6.0 dBFS");
  assert.equal(formatPeakDb(2), "+6.0 dBFS");
  assert.equal(formatPeakDb(0), "silent");
  assert.equal(formatPeakDb("x"), "");
  assert.equal(plural(1, "frame"), "1 frame");
  assert.equal(plural(3, "frame"), "3 frames");
});
