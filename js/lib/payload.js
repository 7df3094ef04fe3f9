// Defensive readers of the `ui` payloads the Python nodes send after execution (nodes/ui_payloads.py).
//
// A node's `onExecuted(message)` receives whatever the backend (or a cached history entry, or another
// version of the pack) produced. These functions never throw: anything missing or malformed becomes null,
// and a malformed entry is dropped rather than drawn.

export const TIMING_KEY = "mmaudio_timing";
export const WAVEFORM_KEY = "mmaudio_waveform";
export const MAX_ENTRIES = 64;
export const MAX_COLUMNS = 8192;
const SOURCES = new Set(["video", "image", "text"]);

function isObject(x) {
  return x !== null && typeof x === "object" && !Array.isArray(x);
}

function entries(message, key) {
  if (!isObject(message)) return [];
  const list = message[key];
  return Array.isArray(list) ? list.filter(isObject) : [];
}

function num(x, { min = -Infinity, max = Infinity } = {}) {
  const v = typeof x === "string" && x.trim() !== "" ? Number(x) : x;
  return typeof v === "number" && Number.isFinite(v) && v >= min && v <= max ? v : null;
}

function int(x, opts) {
  const v = num(x, opts);
  return v !== null && Number.isInteger(v) ? v : null;
}

function bool(x) {
  return x === true;
}

/**
 * The last timing entry of a message, or null.
 * @returns {null | {source, numFrames, fps, timestamps, clipLength, requested, duration, clipFrames,
 *                   syncFrames, segments, cut, maskAwayClip, windows}}  windows: [[start, end] s] of a long
 *                   soundtrack made in windows (empty for one pass)
 */
export function parseTiming(message) {
  const list = entries(message, TIMING_KEY);
  for (let i = list.length - 1; i >= 0; i--) {
    const e = list[i];
    const duration = num(e.duration, { min: 0 });
    if (duration === null || duration === 0) continue;
    const source = SOURCES.has(e.source) ? e.source : null;
    const numFrames = int(e.num_frames, { min: 0 });
    return {
      source: source ?? (numFrames === null || numFrames === 0 ? "text" : numFrames === 1 ? "image" : "video"),
      numFrames,
      fps: num(e.fps, { min: Number.MIN_VALUE }),
      timestamps: bool(e.timestamps),
      clipLength: num(e.clip_length, { min: Number.MIN_VALUE }),
      requested: num(e.requested_duration, { min: Number.MIN_VALUE }),
      duration,
      clipFrames: int(e.clip_frames, { min: 0 }) ?? 0,
      syncFrames: int(e.sync_frames, { min: 0 }) ?? 0,
      segments: int(e.segments, { min: 0 }) ?? 0,
      cut: bool(e.cut),
      maskAwayClip: bool(e.mask_away_clip),
      windows: parseWindows(e.windows),
    };
  }
  return null;
}

const MAX_WINDOWS = 2000;

function parseWindows(windows) {
  if (!Array.isArray(windows)) return [];
  const out = [];
  for (const span of windows.slice(0, MAX_WINDOWS)) {
    const start = Array.isArray(span) ? num(span[0], { min: 0 }) : null;
    const end = Array.isArray(span) ? num(span[1], { min: 0 }) : null;
    if (start !== null && end !== null && end > start) out.push([start, end]);
  }
  return out;
}

function parsePeaks(peaks) {
  if (!Array.isArray(peaks)) return null;
  const n = Math.min(peaks.length, MAX_COLUMNS);
  const min = new Float32Array(n);
  const max = new Float32Array(n);
  for (let k = 0; k < n; k++) {
    const pair = peaks[k];
    let lo = Array.isArray(pair) ? num(pair[0]) ?? 0 : 0;
    let hi = Array.isArray(pair) ? num(pair[1]) ?? 0 : 0;
    if (lo > hi) [lo, hi] = [hi, lo];
    min[k] = lo;
    max[k] = hi;
  }
  return { min, max };
}

function parseRms(rms, n) {
  if (!Array.isArray(rms) || rms.length < n) return null;
  const out = new Float32Array(n);
  for (let k = 0; k < n; k++) out[k] = Math.abs(num(rms[k]) ?? 0);
  return out;
}

/**
 * The waveform entries of a message (at most MAX_ENTRIES), each
 * {index, batchSize, min, max, rms, sampleRate, duration, numSamples, channels, peak, label}; [] when none.
 */
export function parseWaveforms(message) {
  const out = [];
  for (const e of entries(message, WAVEFORM_KEY)) {
    if (out.length >= MAX_ENTRIES) break;
    const peaks = parsePeaks(e.peaks);
    if (peaks === null) continue;
    const sampleRate = num(e.sample_rate, { min: Number.MIN_VALUE });
    const numSamples = int(e.num_samples, { min: 0 });
    let duration = num(e.duration, { min: 0 });
    if (duration === null && sampleRate !== null && numSamples !== null) duration = numSamples / sampleRate;
    let peak = num(e.peak, { min: 0 });
    if (peak === null) {
      peak = 0;
      for (let k = 0; k < peaks.min.length; k++) peak = Math.max(peak, -peaks.min[k], peaks.max[k]);
    }
    out.push({
      index: int(e.index, { min: 0 }) ?? out.length,
      batchSize: int(e.batch_size, { min: 1 }),
      min: peaks.min,
      max: peaks.max,
      rms: parseRms(e.rms, peaks.min.length),
      sampleRate,
      duration,
      numSamples,
      channels: int(e.channels, { min: 1 }),
      peak,
      label: typeof e.label === "string" ? e.label.slice(0, 200) : null,
    });
  }
  return out;
}
