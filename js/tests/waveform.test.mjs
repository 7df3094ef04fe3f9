import assert from "node:assert/strict";
import { test } from "node:test";

import { columnRange, computePeaks, fft, hannWindow, resamplePeaks, spectrogram } from "../lib/waveform.js";

function random(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

function noise(n, seed) {
  const r = random(seed);
  return Float32Array.from({ length: n }, r);
}

test("columns tile the samples without gaps or overlaps", () => {
  for (const [cols, len] of [[512, 44100], [7, 7], [3, 10], [100, 997]]) {
    let next = 0;
    for (let k = 0; k < cols; k++) {
      const [start, end] = columnRange(k, cols, len);
      assert.equal(start, next);
      assert.ok(end > start);
      next = end;
    }
    assert.equal(next, len);
  }
});

test("peaks are the min, max and RMS of each column over all channels", () => {
  const a = noise(1003, 1);
  const b = noise(1003, 2);
  const p = computePeaks([a, b], 40);
  assert.equal(p.min.length, 40);
  for (let k = 0; k < 40; k++) {
    const [s, e] = columnRange(k, 40, 1003);
    const all = [...a.slice(s, e), ...b.slice(s, e)];
    assert.equal(p.min[k], Math.fround(Math.min(...all)));
    assert.equal(p.max[k], Math.fround(Math.max(...all)));
    const rms = Math.sqrt(all.reduce((acc, v) => acc + v * v, 0) / all.length);
    assert.ok(Math.abs(p.rms[k] - rms) < 1e-6);
  }
  assert.ok(Math.abs(p.peak - Math.max(...[...a, ...b].map(Math.abs))) < 1e-7);
});

test("peaks of short, empty or odd input", () => {
  assert.equal(computePeaks(new Float32Array(5), 512).min.length, 5);
  assert.equal(computePeaks(new Float32Array(0), 512).min.length, 0);
  assert.equal(computePeaks(null, 10).min.length, 0);
  assert.equal(computePeaks([], 10).min.length, 0);
  const withNaN = computePeaks(Float32Array.from([NaN, 1, -Infinity, -0.5]), 4);
  assert.deepEqual(Array.from(withNaN.max), [0, 1, 0, -0.5]);
  assert.equal(computePeaks([1, -1, 0.5], "x").min.length, 0);
});

test("resampling keeps the extremes when narrowing and stretches when widening", () => {
  const min = Float32Array.from([-0.1, -0.9, -0.2, -0.3]);
  const max = Float32Array.from([0.1, 0.2, 0.8, 0.3]);
  const narrow = resamplePeaks(min, max, 2);
  assert.deepEqual(Array.from(narrow.min), [Math.fround(-0.9), Math.fround(-0.3)]);
  assert.deepEqual(Array.from(narrow.max), [Math.fround(0.2), Math.fround(0.8)]);
  const wide = resamplePeaks(min, max, 8);
  assert.equal(wide.min.length, 8);
  assert.deepEqual(Array.from(wide.max), [0.1, 0.1, 0.2, 0.2, 0.8, 0.8, 0.3, 0.3].map(Math.fround));
  assert.equal(resamplePeaks(min, max, 0).min.length, 0);
  assert.equal(resamplePeaks(null, undefined, 10).min.length, 10);
  assert.equal(resamplePeaks(min, max, 3, Float32Array.from([0.1, 0.2, 0.3, 0.4])).rms.length, 3);
});

test("fft equals a direct DFT", () => {
  const n = 64;
  const x = noise(n, 3);
  const re = Float64Array.from(x);
  const im = new Float64Array(n);
  fft(re, im);
  for (let k = 0; k < n; k++) {
    let sr = 0;
    let si = 0;
    for (let t = 0; t < n; t++) {
      sr += x[t] * Math.cos((-2 * Math.PI * k * t) / n);
      si += x[t] * Math.sin((-2 * Math.PI * k * t) / n);
    }
    assert.ok(Math.abs(re[k] - sr) < 1e-9 && Math.abs(im[k] - si) < 1e-9, `bin ${k}`);
  }
  assert.throws(() => fft(new Float64Array(12), new Float64Array(12)), RangeError);
});

test("a full-scale sine peaks at its bin near 0 dB", () => {
  const rate = 16000;
  const fftSize = 512;
  const bin = 40; // exactly on a bin: 1250 Hz
  const freq = (bin * rate) / fftSize;
  const x = Float32Array.from({ length: rate }, (_, i) => Math.sin((2 * Math.PI * freq * i) / rate));
  const spec = spectrogram(x, { fftSize, columns: 16 });
  assert.equal(spec.bins, fftSize / 2 + 1);
  assert.equal(spec.data.length, 16 * spec.bins);
  for (let c = 2; c < 14; c++) {
    const column = spec.data.slice(c * spec.bins, (c + 1) * spec.bins);
    const top = column.indexOf(Math.max(...column));
    assert.equal(top, bin);
    assert.ok(Math.abs(column[top]) < 0.5, `${column[top]} dB`);
    assert.ok(column[bin + 20] < -60);
  }
  assert.equal(spectrogram(new Float32Array(0)).columns, 0);
  assert.throws(() => spectrogram(x, { fftSize: 100 }), RangeError);
});

test("hann window", () => {
  const w = hannWindow(8);
  assert.equal(w[0], 0);
  assert.ok(Math.abs(w[4] - 1) < 1e-7);
});
