// Canvas drawing of the waveform widget: one row per generated sample, peaks band, RMS band, labels, playhead.
//
// Takes a CanvasRenderingContext2D (or anything with the same methods: tests pass a recorder) and parsed
// payload entries (payload.parseWaveforms). Returns the rows' layout so clicks can be mapped to a time.

import { formatPeakDb, formatSampleRate, formatSeconds } from "./format.js";
import { resamplePeaks } from "./waveform.js";

export const DEFAULT_THEME = Object.freeze({
  background: "#1e1e1e",
  rowBackground: "#262626",
  axis: "#444444",
  peaks: "#4fa3e0",
  rms: "#9fd3ff",
  text: "#d0d0d0",
  dim: "#8a8a8a",
  playhead: "#ffcc33",
  font: "11px sans-serif",
});

const ROW_GAP = 4;
const LABEL_HEIGHT = 14;

/** Row rectangles for `count` entries in a width x height area (at most maxRows shown). */
export function layoutRows(count, width, height, { x = 0, y = 0, maxRows = 8 } = {}) {
  const shown = Math.max(0, Math.min(count, maxRows));
  if (shown === 0 || !(width > 0) || !(height > 0)) return [];
  const footer = count > shown ? LABEL_HEIGHT : 0;
  const rowHeight = (height - footer - ROW_GAP * (shown - 1)) / shown;
  if (rowHeight < 8) return [];
  const rows = [];
  for (let i = 0; i < shown; i++) {
    rows.push({ entry: i, x, y: y + i * (rowHeight + ROW_GAP), width, height: rowHeight });
  }
  return rows;
}

/** The entry and the time (seconds) under a point, or null. */
export function hitTest(rows, entries, px, py) {
  for (const row of rows ?? []) {
    if (px >= row.x && px <= row.x + row.width && py >= row.y && py <= row.y + row.height) {
      const entry = entries?.[row.entry];
      const duration = entry?.duration;
      if (!(duration > 0)) return { entry: row.entry, time: null, fraction: null };
      const fraction = Math.min(1, Math.max(0, (px - row.x) / row.width));
      return { entry: row.entry, time: fraction * duration, fraction };
    }
  }
  return null;
}

function rowCaption(entry, total) {
  const name = entry.label ? entry.label : total > 1 ? `#${entry.index + 1}` : "";
  const info = [formatSeconds(entry.duration), formatSampleRate(entry.sampleRate), formatPeakDb(entry.peak)]
    .filter((s) => s && s !== "–");
  return { name, info: info.join(" · ") };
}

function drawRow(ctx, entry, row, theme, total) {
  const { x, y, width, height } = row;
  ctx.fillStyle = theme.rowBackground;
  ctx.fillRect(x, y, width, height);
  const mid = y + height / 2;
  const half = height / 2 - 1;
  ctx.fillStyle = theme.axis;
  ctx.fillRect(x, Math.round(mid), width, 1);

  const columns = Math.max(1, Math.floor(width));
  const fitted = resamplePeaks(entry.min, entry.max, columns, entry.rms);
  const scale = (v) => Math.max(-1, Math.min(1, v)) * half;
  const step = width / columns;
  ctx.fillStyle = theme.peaks;
  for (let c = 0; c < fitted.min.length; c++) {
    const top = mid - scale(fitted.max[c]);
    const bottom = mid - scale(fitted.min[c]);
    ctx.fillRect(x + c * step, top, Math.max(step, 1), Math.max(1, bottom - top));
  }
  if (fitted.rms) {
    ctx.fillStyle = theme.rms;
    for (let c = 0; c < fitted.rms.length; c++) {
      const r = scale(fitted.rms[c]);
      if (r >= 0.5) ctx.fillRect(x + c * step, mid - r, Math.max(step, 1), 2 * r);
    }
  }

  const caption = rowCaption(entry, total);
  ctx.font = theme.font;
  ctx.textBaseline = "top";
  if (caption.name) {
    ctx.fillStyle = theme.text;
    ctx.textAlign = "left";
    ctx.fillText(caption.name, x + 4, y + 2, Math.max(10, width / 2 - 8));
  }
  if (caption.info) {
    ctx.fillStyle = theme.dim;
    ctx.textAlign = "right";
    ctx.fillText(caption.info, x + width - 4, y + 2);
  }
}

/**
 * Draw all entries; returns the row layout. `playhead` = {entry, time} draws a vertical line on that row.
 * Draws a message instead when there is nothing to show.
 */
export function drawWaveforms(ctx, entries, { x = 0, y = 0, width, height, theme = DEFAULT_THEME, playhead = null,
  maxRows = 8, emptyText = "run the workflow to see the waveform" } = {}) {
  const t = { ...DEFAULT_THEME, ...(theme ?? {}) };
  ctx.save?.();
  try {
    ctx.fillStyle = t.background;
    ctx.fillRect(x, y, width, height);
    const list = Array.isArray(entries) ? entries : [];
    const rows = layoutRows(list.length, width, height, { x, y, maxRows });
    if (rows.length === 0) {
      ctx.fillStyle = t.dim;
      ctx.font = t.font;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText(list.length ? "too small to draw" : emptyText, x + width / 2, y + height / 2);
      return rows;
    }
    for (const row of rows) drawRow(ctx, list[row.entry], row, t, list.length);
    if (list.length > rows.length) {
      ctx.fillStyle = t.dim;
      ctx.textAlign = "left";
      ctx.textBaseline = "bottom";
      ctx.fillText(`+ ${list.length - rows.length} more`, x + 4, y + height);
    }
    const row = rows.find((r) => r.entry === playhead?.entry);
    const duration = row ? list[row.entry].duration : null;
    if (row && duration > 0 && Number.isFinite(playhead.time)) {
      const px = row.x + Math.min(1, Math.max(0, playhead.time / duration)) * row.width;
      ctx.fillStyle = t.playhead;
      ctx.fillRect(Math.round(px), row.y, 1, row.height);
    }
    return rows;
  } finally {
    ctx.restore?.();
  }
}

const MAGMA = [
  [0, [0, 0, 4]],
  [0.25, [80, 18, 123]],
  [0.5, [183, 55, 121]],
  [0.75, [252, 137, 97]],
  [1, [252, 253, 191]],
];

/** A magma-like colour for v in [0, 1] (black -> purple -> orange -> pale yellow). */
export function heatColor(v) {
  const x = Number.isFinite(v) ? Math.max(0, Math.min(1, v)) : 0;
  for (let i = 1; i < MAGMA.length; i++) {
    const [x1, c1] = MAGMA[i];
    if (x <= x1) {
      const [x0, c0] = MAGMA[i - 1];
      const t = (x - x0) / (x1 - x0);
      return c0.map((a, k) => Math.round(a + (c1[k] - a) * t));
    }
  }
  return MAGMA[MAGMA.length - 1][1].slice();
}

const hzToMel = (hz) => 2595 * Math.log10(1 + hz / 700);
const melToHz = (mel) => 700 * (10 ** (mel / 2595) - 1);

/** Spectrogram bin shown at each pixel row (row 0 = top = Nyquist), on a mel axis so low sounds get room. */
export function melRows(height, bins, sampleRate = 44100) {
  const nyquist = sampleRate / 2;
  const top = hzToMel(nyquist);
  const rows = new Int32Array(height);
  for (let py = 0; py < height; py++) {
    const fraction = height > 1 ? (height - 1 - py) / (height - 1) : 0;
    const hz = melToHz(fraction * top);
    rows[py] = Math.min(bins - 1, Math.max(0, Math.round((hz / nyquist) * (bins - 1))));
  }
  return rows;
}

/**
 * Draw a spectrogram (waveform.spectrogram, optionally with .sampleRate) into a rectangle: time across, mel
 * frequency up, `rangeDb` of dynamic range below its loudest bin. Needs ctx.createImageData / putImageData
 * (device pixels, no transform); returns false when they are missing or there is nothing to draw.
 */
export function drawSpectrogram(ctx, spec, { x = 0, y = 0, width, height, rangeDb = 80 } = {}) {
  const w = Math.floor(width);
  const h = Math.floor(height);
  if (!spec || !(spec.columns > 0) || !(spec.bins > 0) || w < 1 || h < 1) return false;
  if (typeof ctx?.createImageData !== "function" || typeof ctx.putImageData !== "function") return false;
  let top = -Infinity;
  for (const v of spec.data) if (v > top) top = v;
  const floor = top - rangeDb;
  const rows = melRows(h, spec.bins, spec.sampleRate > 0 ? spec.sampleRate : 44100);
  const image = ctx.createImageData(w, h);
  for (let px = 0; px < w; px++) {
    const c = Math.min(spec.columns - 1, Math.floor((px * spec.columns) / w));
    for (let py = 0; py < h; py++) {
      const [r, g, b] = heatColor((spec.data[c * spec.bins + rows[py]] - floor) / rangeDb);
      const o = (py * w + px) * 4;
      image.data[o] = r;
      image.data[o + 1] = g;
      image.data[o + 2] = b;
      image.data[o + 3] = 255;
    }
  }
  ctx.putImageData(image, Math.round(x), Math.round(y));
  return true;
}
