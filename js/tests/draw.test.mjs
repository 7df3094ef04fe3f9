import assert from "node:assert/strict";
import { test } from "node:test";

import { drawSpectrogram, drawWaveforms, heatColor, hitTest, layoutRows, melRows } from "../lib/draw.js";
import { parseWaveforms } from "../lib/payload.js";

/** A 2D context that records calls and checks every number it is given is finite. */
function recorder({ imageData = false } = {}) {
  const calls = [];
  const ctx = new Proxy({}, {
    get(target, prop) {
      if (prop in target) return target[prop];
      if (prop === "createImageData" && !imageData) return undefined;
      if (prop === "createImageData") {
        return (w, h) => ({ width: w, height: h, data: new Uint8ClampedArray(w * h * 4) });
      }
      return (...args) => {
        for (const a of args) if (typeof a === "number") assert.ok(Number.isFinite(a), `${String(prop)}(${args})`);
        calls.push([prop, ...args]);
      };
    },
    set(target, prop, value) {
      target[prop] = value;
      return true;
    },
  });
  return { ctx, calls };
}

const message = {
  mmaudio_waveform: [
    { index: 0, peaks: Array.from({ length: 512 }, (_, k) => [-Math.abs(Math.sin(k)), Math.abs(Math.cos(k))]),
      rms: Array.from({ length: 512 }, () => 0.3), sample_rate: 44100, duration: 8, peak: 1, label: "seed 0" },
    { index: 1, peaks: [[-0.1, 0.1]], sample_rate: 44100, duration: 8, peak: 0.1 },
  ],
};

test("rows split the height; hits map to time", () => {
  const rows = layoutRows(2, 300, 124);
  assert.equal(rows.length, 2);
  assert.equal(rows[0].height, 60);
  assert.equal(rows[1].y, 64);
  const entries = parseWaveforms(message);
  const hit = hitTest(rows, entries, 150, 70);
  assert.equal(hit.entry, 1);
  assert.equal(hit.time, 4);
  assert.equal(hitTest(rows, entries, 150, 62), null); // the gap
  assert.equal(hitTest(null, null, 1, 1), null);
  assert.equal(layoutRows(3, 100, 10).length, 0);
  assert.equal(layoutRows(20, 100, 400, { maxRows: 4 }).length, 4);
});

test("drawing entries with a playhead", () => {
  const { ctx, calls } = recorder();
  const rows = drawWaveforms(ctx, parseWaveforms(message), { width: 320, height: 124, playhead: { entry: 0, time: 2 } });
  assert.equal(rows.length, 2);
  const texts = calls.filter((c) => c[0] === "fillText").map((c) => c[1]);
  assert.ok(texts.includes("seed 0"));
  assert.ok(texts.some((t) => /8\.00 s · 44\.1 kHz · 0\.0 dBFS/.test(t)));
  assert.ok(texts.includes("#2"));
  // the playhead: a 1-px rect a quarter of the way across row 0
  assert.ok(calls.some((c) => c[0] === "fillRect" && c[1] === 80 && c[3] === 1));
  assert.ok(calls.some((c) => c[0] === "save") && calls.some((c) => c[0] === "restore"));
});

test("nothing to draw: a message, no exception", () => {
  for (const entries of [[], null, undefined, "x"]) {
    const { ctx, calls } = recorder();
    assert.deepEqual(drawWaveforms(ctx, entries, { width: 200, height: 48 }), []);
    assert.ok(calls.some((c) => c[0] === "fillText"));
  }
  const { ctx } = recorder();
  assert.deepEqual(drawWaveforms(ctx, parseWaveforms(message), { width: 0, height: 0 }), []);
});

test("more entries than rows: a footer", () => {
  const many = { mmaudio_waveform: Array.from({ length: 12 }, (_, i) => ({ index: i, peaks: [[-1, 1]], duration: 1 })) };
  const { ctx, calls } = recorder();
  const rows = drawWaveforms(ctx, parseWaveforms(many), { width: 200, height: 400, maxRows: 8 });
  assert.equal(rows.length, 8);
  assert.ok(calls.some((c) => c[0] === "fillText" && c[1] === "+ 4 more"));
});

test("spectrogram image", () => {
  const spec = { columns: 2, bins: 3, data: Float32Array.from([-100, -50, 0, 0, 0, 0]) };
  const { ctx, calls } = recorder({ imageData: true });
  assert.equal(drawSpectrogram(ctx, spec, { width: 4, height: 3 }), true);
  const put = calls.find((c) => c[0] === "putImageData");
  assert.ok(put);
  const image = put[1];
  assert.equal(image.data.length, 4 * 3 * 4);
  assert.ok(image.data.every((v, i) => i % 4 !== 3 || v === 255));
  // top-left pixel: column 0 at Nyquist (bin 2, 0 dB = the loudest) -> the brightest colour
  assert.deepEqual(Array.from(image.data.slice(0, 3)), heatColor(1));
  assert.equal(drawSpectrogram(recorder().ctx, spec, { width: 4, height: 3 }), false);
  assert.equal(drawSpectrogram(ctx, null, { width: 4, height: 3 }), false);
  assert.equal(drawSpectrogram(ctx, { columns: 0, bins: 3, data: [] }, { width: 4, height: 3 }), false);
});

test("colours and the mel axis", () => {
  assert.deepEqual(heatColor(0), [0, 0, 4]);
  assert.deepEqual(heatColor(1), [252, 253, 191]);
  assert.deepEqual(heatColor(NaN), [0, 0, 4]);
  assert.deepEqual(heatColor(7), [252, 253, 191]);
  const rows = melRows(100, 513, 44100);
  assert.equal(rows[0], 512);
  assert.equal(rows[99], 0);
  for (let i = 1; i < 100; i++) assert.ok(rows[i] <= rows[i - 1]);
  // mel: the lower half of the rows covers well under half of the bins
  assert.ok(rows[50] < 513 / 4);
});
