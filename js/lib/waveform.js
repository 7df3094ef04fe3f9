// Waveform peaks and spectrograms from PCM samples, and fitting precomputed peaks to a pixel width.
//
// Pure module (no DOM): the node widget draws what these functions return. Column k of a waveform covers the
// samples [floor(k*T/C), floor((k+1)*T/C)), the same binning nodes/ui_payloads.py uses, so peaks computed in
// Python and in the browser agree.

/** Half-open sample range [start, end) of column k out of `columns` over `length` samples. */
export function columnRange(k, columns, length) {
  return [Math.floor((k * length) / columns), Math.floor(((k + 1) * length) / columns)];
}

function asChannels(samples) {
  if (samples == null) return [];
  if (ArrayBuffer.isView(samples) || Array.isArray(samples) && samples.every((x) => typeof x === "number")) {
    return [samples];
  }
  if (Array.isArray(samples)) return samples.filter((c) => c != null && typeof c.length === "number");
  return [];
}

function finite(x) {
  return Number.isFinite(x) ? x : 0;
}

/**
 * Min, max and RMS per column of PCM audio (one Float32Array or an array of channels; the envelope over all
 * channels). `columns` is capped at the number of samples, so every column holds at least one sample.
 * @returns {{min: Float32Array, max: Float32Array, rms: Float32Array, peak: number, length: number}}
 */
export function computePeaks(samples, columns = 512) {
  const channels = asChannels(samples);
  const length = channels.length ? Math.min(...channels.map((c) => c.length)) : 0;
  const cols = Math.max(0, Math.min(Math.floor(Number(columns) || 0), length));
  const min = new Float32Array(cols);
  const max = new Float32Array(cols);
  const rms = new Float32Array(cols);
  let peak = 0;
  for (let k = 0; k < cols; k++) {
    const [start, end] = columnRange(k, cols, length);
    let lo = Infinity;
    let hi = -Infinity;
    let sum = 0;
    for (const channel of channels) {
      for (let i = start; i < end; i++) {
        const v = finite(channel[i]);
        if (v < lo) lo = v;
        if (v > hi) hi = v;
        sum += v * v;
      }
    }
    min[k] = lo;
    max[k] = hi;
    rms[k] = Math.sqrt(sum / ((end - start) * channels.length));
    peak = Math.max(peak, Math.abs(lo), Math.abs(hi));
  }
  return { min, max, rms, peak, length };
}

/**
 * Fit per-column peaks to `width` pixels: each pixel takes the extreme of the columns it covers (narrower
 * than the data) or the column under it (wider), so a short click never disappears when zoomed out.
 */
export function resamplePeaks(min, max, width, rms = null) {
  const n = Math.min(min?.length ?? 0, max?.length ?? 0);
  const w = Math.max(0, Math.floor(Number(width) || 0));
  const outMin = new Float32Array(w);
  const outMax = new Float32Array(w);
  const outRms = rms && rms.length >= n ? new Float32Array(w) : null;
  if (n === 0) return { min: outMin, max: outMax, rms: outRms };
  for (let x = 0; x < w; x++) {
    let [start, end] = columnRange(x, w, n);
    if (end <= start) end = start + 1;
    let lo = Infinity;
    let hi = -Infinity;
    let sq = 0;
    for (let k = start; k < end; k++) {
      if (min[k] < lo) lo = min[k];
      if (max[k] > hi) hi = max[k];
      if (outRms) sq += rms[k] * rms[k];
    }
    outMin[x] = lo;
    outMax[x] = hi;
    if (outRms) outRms[x] = Math.sqrt(sq / (end - start));
  }
  return { min: outMin, max: outMax, rms: outRms };
}

// ------------------------------------------------------------------------------------------ spectrogram

/** In-place iterative radix-2 FFT of (re, im); the length must be a power of two. */
export function fft(re, im) {
  const n = re.length;
  if (n !== im.length || n === 0 || (n & (n - 1)) !== 0) {
    throw new RangeError(`fft: length must be a power of two, got ${n}`);
  }
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      [re[i], re[j]] = [re[j], re[i]];
      [im[i], im[j]] = [im[j], im[i]];
    }
  }
  for (let size = 2; size <= n; size <<= 1) {
    const half = size >> 1;
    const angle = (-2 * Math.PI) / size;
    for (let start = 0; start < n; start += size) {
      for (let k = 0; k < half; k++) {
        const wr = Math.cos(angle * k);
        const wi = Math.sin(angle * k);
        const a = start + k;
        const b = a + half;
        const tr = re[b] * wr - im[b] * wi;
        const ti = re[b] * wi + im[b] * wr;
        re[b] = re[a] - tr;
        im[b] = im[a] - ti;
        re[a] += tr;
        im[a] += ti;
      }
    }
  }
}

/** Periodic Hann window of length n. */
export function hannWindow(n) {
  const w = new Float32Array(n);
  for (let i = 0; i < n; i++) w[i] = 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / n);
  return w;
}

function mixDown(channels, length) {
  if (channels.length === 1) return channels[0];
  const out = new Float32Array(length);
  for (const c of channels) for (let i = 0; i < length; i++) out[i] += finite(c[i]) / channels.length;
  return out;
}

/**
 * Magnitude spectrogram in dB (relative to a full-scale sine), one frame per output column.
 *
 * Frames are centred at evenly spaced sample positions (zero-padded at the edges), Hann-windowed.
 * @returns {{data: Float32Array, columns: number, bins: number, fftSize: number}} data[c * bins + b] in dB,
 *          bin b at b * sampleRate / fftSize Hz.
 */
export function spectrogram(samples, { fftSize = 512, columns = 256, floorDb = -100 } = {}) {
  if (!Number.isInteger(fftSize) || fftSize < 2 || (fftSize & (fftSize - 1)) !== 0) {
    throw new RangeError(`spectrogram: fftSize must be a power of two, got ${fftSize}`);
  }
  const channels = asChannels(samples);
  const length = channels.length ? Math.min(...channels.map((c) => c.length)) : 0;
  const cols = length === 0 ? 0 : Math.max(0, Math.floor(Number(columns) || 0));
  const bins = fftSize / 2 + 1;
  const data = new Float32Array(cols * bins).fill(floorDb);
  if (cols === 0) return { data, columns: 0, bins, fftSize };
  const mono = mixDown(channels, length);
  const window = hannWindow(fftSize);
  const windowSum = window.reduce((a, b) => a + b, 0);
  const re = new Float64Array(fftSize);
  const im = new Float64Array(fftSize);
  for (let c = 0; c < cols; c++) {
    const centre = Math.floor(((c + 0.5) * length) / cols);
    const start = centre - fftSize / 2;
    for (let i = 0; i < fftSize; i++) {
      const j = start + i;
      re[i] = j >= 0 && j < length ? finite(mono[j]) * window[i] : 0;
      im[i] = 0;
    }
    fft(re, im);
    for (let b = 0; b < bins; b++) {
      // a full-scale sine gives |X| = windowSum / 2 in its bin -> 0 dB
      const magnitude = Math.hypot(re[b], im[b]) / (windowSum / 2);
      const db = 20 * Math.log10(magnitude + 1e-12);
      data[c * bins + b] = Math.max(floorDb, db);
    }
  }
  return { data, columns: cols, bins, fftSize };
}
