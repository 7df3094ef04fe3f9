// Short human-readable numbers for node widgets. Pure functions; every one accepts garbage and says so.

const DASH = "–";

function isNumber(x) {
  return typeof x === "number" && Number.isFinite(x);
}

/** Fixed decimals without trailing zeros: 24 -> "24", 29.97002997 -> "29.97", 23.976 -> "23.976". */
export function trimNumber(x, decimals = 3) {
  if (!isNumber(x)) return DASH;
  const s = x.toFixed(decimals);
  return s.includes(".") ? s.replace(/\.?0+$/, "") : s;
}

/** Seconds: "8.00 s" below a minute, "1:05.50" from one minute, "1:02:03.0" from one hour. */
export function formatSeconds(s, decimals = 2) {
  if (!isNumber(s)) return DASH;
  const sign = s < 0 ? "-" : "";
  const total = Number(Math.abs(s).toFixed(decimals));
  if (total < 60) return `${sign}${total.toFixed(decimals)} s`;
  const h = Math.floor(total / 3600);
  const m = Math.floor((total - h * 3600) / 60);
  const rest = (total - h * 3600 - m * 60).toFixed(decimals).padStart(decimals > 0 ? decimals + 3 : 2, "0");
  return h > 0 ? `${sign}${h}:${String(m).padStart(2, "0")}:${rest}` : `${sign}${m}:${rest}`;
}

/** Frame rate: "29.97 fps", "24 fps". */
export function formatFps(fps) {
  return isNumber(fps) && fps > 0 ? `${trimNumber(fps, 3)} fps` : `${DASH} fps`;
}

/** Sample rate: 44100 -> "44.1 kHz", 16000 -> "16 kHz", 800 -> "800 Hz". */
export function formatSampleRate(hz) {
  if (!isNumber(hz) || hz <= 0) return `${DASH} Hz`;
  return hz >= 1000 ? `${trimNumber(hz / 1000, 2)} kHz` : `${trimNumber(hz, 0)} Hz`;
}

/** Peak level: 1 -> "0.0 dBFS", 0.5 -> "-6.0 dBFS", 0 -> "silent". */
export function formatPeakDb(peak) {
  if (!isNumber(peak) || peak < 0) return "";
  if (peak <= 1e-6) return "silent";
  const db = 20 * Math.log10(peak);
  return `${db > 0 ? "+" : ""}${db.toFixed(1)} dBFS`;
}

/** "1 frame", "2 frames". */
export function plural(n, word, many = `${word}s`) {
  return `${isNumber(n) ? n : DASH} ${n === 1 ? word : many}`;
}
