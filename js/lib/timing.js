// Duration and frame counts the backend will use, computed in the browser.
//
// This mirrors the Python rules of mmaudio/features/frames.py (which source frames CLIP and Synchformer read,
// and how a requested duration is fitted to the clip) and mmaudio/model/sequence_config.py (sequence lengths
// for a duration) step by step, in the same double-precision arithmetic, so that the info line shows the
// numbers the backend will report, not an approximation. Pure module: no browser or ComfyUI imports.

export const CLIP_FPS = 8;
export const SYNC_FPS = 25;
export const SYNC_SEGMENT = 16; // Synchformer frames per segment
export const SYNC_STEP = 8; // frames between segment starts
export const SYNC_TOKENS_PER_SEGMENT = 8;
export const MIN_DURATION_S = SYNC_SEGMENT / SYNC_FPS; // 0.64 s: one Synchformer segment
export const TRAINING_DURATION_S = 8; // text-to-audio default (mmaudio/model/config.py)
export const SNAP_MAX_DENOMINATOR = 1001n; // NTSC rates such as 30000/1001
// Bounds that keep the browser responsive on absurd inputs (the selection loop visits every frame up to the
// duration): beyond them the timing is estimated from the clip length instead of replayed frame by frame.
export const MAX_EXACT_SECONDS = 24 * 3600;
export const MAX_EXACT_FRAMES = 2_000_000;

// ---------------------------------------------------------------------------------------- exact frame rates

function bigAbs(x) {
  return x < 0n ? -x : x;
}

function bigGcd(a, b) {
  a = bigAbs(a);
  b = bigAbs(b);
  while (b !== 0n) [a, b] = [b, a % b];
  return a;
}

/** The exact value of a finite double as a reduced fraction {num, den} of BigInts (den > 0). */
export function doubleToFraction(x) {
  if (typeof x !== "number" || !Number.isFinite(x)) throw new RangeError(`not a finite number: ${x}`);
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const hi = view.getUint32(0);
  const lo = view.getUint32(4);
  const negative = hi >>> 31 === 1;
  const biased = (hi >>> 20) & 0x7ff;
  let mantissa = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo);
  let exponent;
  if (biased === 0) {
    exponent = -1074; // subnormal
  } else {
    mantissa |= 1n << 52n;
    exponent = biased - 1075;
  }
  let num = mantissa;
  let den = 1n;
  if (exponent >= 0) num <<= BigInt(exponent);
  else den <<= BigInt(-exponent);
  const g = num === 0n ? den : bigGcd(num, den);
  num /= g;
  den /= g;
  return { num: negative ? -num : num, den };
}

/** Closest fraction to num/den with a denominator of at most maxDen (Python's Fraction.limit_denominator). */
export function limitDenominator(num, den, maxDen) {
  if (den <= maxDen) return { num, den };
  let [p0, q0, p1, q1] = [0n, 1n, 1n, 0n];
  let [n, d] = [num, den];
  for (;;) {
    // floor division for possibly negative n (d > 0 throughout)
    let a = n / d;
    if (n % d !== 0n && n < 0n !== d < 0n) a -= 1n;
    const q2 = q0 + a * q1;
    if (q2 > maxDen) break;
    [p0, q0, p1, q1] = [p1, q1, p0 + a * p1, q2];
    [n, d] = [d, n - a * d];
  }
  const k = (maxDen - q0) / q1;
  const b1 = { num: p0 + k * p1, den: q0 + k * q1 };
  const b2 = { num: p1, den: q1 };
  // |b2 - x| <= |b1 - x|, compared exactly: |b.num*den - num*b.den| / (b.den*den)
  const dist2 = bigAbs(b2.num * den - num * b2.den) * b1.den;
  const dist1 = bigAbs(b1.num * den - num * b1.den) * b2.den;
  const pick = dist2 <= dist1 ? b2 : b1;
  const g = bigGcd(pick.num, pick.den) || 1n;
  return { num: pick.num / g, den: pick.den / g };
}

const MAX_EXACT = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * A frame rate as the backend sees it: the exact fraction it snaps to (e.g. 29.97002997002997 -> 30000/1001,
 * like frames.exact_rate), with a function giving frame i's timestamp exactly as Python's float(i / rate).
 * Returns null when fps is not a positive finite number.
 */
export function exactRate(fps) {
  if (typeof fps !== "number" || !Number.isFinite(fps) || fps <= 0) return null;
  let rate = doubleToFraction(fps);
  const snapped = limitDenominator(rate.num, rate.den, SNAP_MAX_DENOMINATOR);
  if (snapped.num > 0n && Math.abs(Number(snapped.num) / Number(snapped.den) - fps) <= 1e-12 * fps) {
    rate = snapped;
  }
  const small = rate.num <= MAX_EXACT && rate.den <= MAX_EXACT;
  const num = Number(rate.num);
  const den = Number(rate.den);
  // One correctly rounded division of exact operands equals Python's correctly rounded Fraction -> float.
  const value = small ? num / den : fps;
  const frameTime = small && rate.den <= 1n << 20n ? (i) => (i * den) / num : (i) => i / fps;
  return { num: rate.num, den: rate.den, value, frameTime };
}

// ---------------------------------------------------------------------------------------- selection rules

/** How many slots of a `rate` fps stream the reference fills from frames with times <= end (sample and hold). */
export function sampleAndHoldCount(numFrames, frameTime, rate, end) {
  const step = 1 / rate;
  let target = 0;
  let count = 0;
  for (let i = 0; i < numFrames; i++) {
    const t = frameTime(i);
    if (t < 0) continue;
    if (t > end) break;
    while (t >= target) {
      count++;
      target += step;
    }
  }
  return count;
}

/** Sequence lengths for an effective duration (sequence_config.SequenceLengths.for_duration), or null. */
export function lengthsForDuration(duration) {
  if (typeof duration !== "number" || !Number.isFinite(duration) || duration <= 0) return null;
  if (duration * SYNC_FPS < SYNC_SEGMENT) return null;
  const clipFrames = Math.trunc(duration * CLIP_FPS);
  // (d*25 - 16) // 8 in Python: a float floor division by a power of two is exact, as Math.floor(x / 8) is.
  const segments = Math.floor((duration * SYNC_FPS - SYNC_SEGMENT) / SYNC_STEP) + 1;
  return {
    clipFrames,
    syncFrames: Math.trunc(duration * SYNC_FPS),
    segments,
    syncTokens: segments * SYNC_TOKENS_PER_SEGMENT,
  };
}

function positiveOrNull(x) {
  return typeof x === "number" && Number.isFinite(x) && x > 0 ? x : null;
}

function result(fields) {
  return {
    ok: false,
    error: null,
    source: null,
    requested: null,
    clipLength: null,
    duration: null,
    cut: false,
    tooShort: false,
    clipFrames: 0,
    syncFrames: 0,
    segments: 0,
    syncTokens: 0,
    ...fields,
  };
}

function tooShortMessage(duration) {
  return `${fmt(duration)} s is shorter than the ${fmt(MIN_DURATION_S)} s minimum (one Synchformer segment)`;
}

function fmt(x) {
  return Number.isFinite(x) ? String(Math.round(x * 1000) / 1000) : String(x);
}

/**
 * What the encode-conditions node will do.
 *
 * @param {object} p
 * @param {number|null} p.numFrames  frames of the connected clip (0/null: no clip, text-to-audio; 1: a still image)
 * @param {number|null} p.fps        their frame rate (needed for more than one frame)
 * @param {number|null} p.duration   the duration widget (0, empty or invalid: the clip length; 8 s without a clip)
 * @param {number|null} [p.clipLength] seconds the frames cover, when known better than numFrames/fps (a decoded
 *                                   file with its own timestamps): only used when fps is missing
 * @returns {object} ok, error, source ("video" | "image" | "text"), requested, clipLength, duration (effective),
 *                   cut (requested longer than the clip), tooShort, clipFrames, syncFrames, segments, syncTokens
 */
export function computeTiming({ numFrames = null, fps = null, duration = null, clipLength = null } = {}) {
  const requested = positiveOrNull(duration);
  const n = Number.isInteger(numFrames) && numFrames > 0 ? numFrames : 0;

  if (n === 0) {
    const d = requested ?? TRAINING_DURATION_S;
    const lengths = lengthsForDuration(d);
    if (!lengths) return result({ source: "text", requested, duration: d, tooShort: true, error: tooShortMessage(d) });
    // Text-to-audio: no frames are read; the network still runs at these sequence lengths.
    return result({ ok: true, source: "text", requested, duration: d, ...lengths });
  }

  if (n === 1) {
    if (requested === null) {
      return result({ source: "image", error: "a single image (image-to-audio) needs a duration in seconds" });
    }
    const lengths = lengthsForDuration(requested);
    if (Math.trunc(CLIP_FPS * requested) < 1 || !lengths) {
      return result({ source: "image", requested, duration: requested, tooShort: true,
        error: tooShortMessage(requested) });
    }
    // A still image feeds CLIP only (the same frame in every slot); Synchformer reads nothing.
    return result({ ok: true, source: "image", requested, duration: requested, ...lengths, syncFrames: 0,
      segments: 0 });
  }

  const rate = exactRate(fps);
  if (rate === null) {
    const covered = positiveOrNull(clipLength);
    if (covered === null) {
      return result({ source: "video", requested, error: "the frame rate (fps) of the frames is needed" });
    }
    // Only the clip length is known (decoded timestamps): an estimate at the stream rates.
    return estimateFromLength(covered, requested);
  }
  const frameTime = rate.frameTime;
  const length = frameTime(n - 1) + 1 / rate.value;
  const target = requested ?? length;
  if (!(target <= MAX_EXACT_SECONDS) || Math.min(n, rate.value * target) > MAX_EXACT_FRAMES) {
    return estimateFromLength(length, requested);
  }
  const clipSlots = sampleAndHoldCount(n, frameTime, CLIP_FPS, target);
  const syncSlots = sampleAndHoldCount(n, frameTime, SYNC_FPS, target);
  let effective = target;
  if (clipSlots / CLIP_FPS < effective) effective = clipSlots / CLIP_FPS;
  if (syncSlots / SYNC_FPS < effective) effective = syncSlots / SYNC_FPS;
  const cut = requested !== null && effective < requested;
  const lengths = Math.trunc(SYNC_FPS * effective) >= SYNC_SEGMENT ? lengthsForDuration(effective) : null;
  if (!lengths) {
    return result({ source: "video", requested, clipLength: length, duration: effective, cut, tooShort: true,
      error: `the clip covers ${fmt(effective)} s, shorter than the ${fmt(MIN_DURATION_S)} s minimum` });
  }
  return result({ ok: true, source: "video", requested, clipLength: length, duration: effective, cut,
    ...lengths });
}

function estimateFromLength(length, requested) {
  const target = requested ?? length;
  const effective = Math.min(target, length);
  const cut = requested !== null && effective < requested;
  const lengths = lengthsForDuration(effective);
  if (!lengths) {
    return result({ source: "video", requested, clipLength: length, duration: effective, cut, tooShort: true,
      estimate: true, error: tooShortMessage(effective) });
  }
  return result({ ok: true, source: "video", requested, clipLength: length, duration: effective, cut,
    estimate: true, ...lengths });
}

/**
 * What can be said before the clip is known (nothing executed yet): the requested duration's frame counts,
 * which hold when the clip is at least that long.
 */
export function requestedTiming(duration) {
  const requested = positiveOrNull(duration);
  if (requested === null) return result({ ok: true, source: "video", requested: null, pending: true });
  const lengths = lengthsForDuration(requested);
  if (!lengths) {
    return result({ source: "video", requested, duration: requested, tooShort: true, pending: true,
      error: tooShortMessage(requested) });
  }
  return result({ ok: true, source: "video", requested, duration: requested, pending: true, ...lengths });
}
