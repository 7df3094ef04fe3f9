// The info line of the encode-conditions node: what duration and frame counts the backend will use.
//
// Combines what the browser knows before running (the duration widget, which inputs are connected) with the
// last `mmaudio_timing` payload (the clip's frame count and rate), recomputing with the backend's rules when
// the duration widget changes after a run. Pure: the entry file passes plain values in and renders the result.

import { formatFps, formatSeconds, plural, trimNumber } from "./format.js";
import { CLIP_FPS, MIN_DURATION_S, SYNC_FPS, computeTiming, requestedTiming } from "./timing.js";

export const LEVELS = Object.freeze({ ok: "ok", warn: "warn", error: "error" });
const SAME_DURATION_EPS = 1e-9;

function countsText(t, maskAwayClip) {
  const parts = [];
  if (t.source === "text") return parts; // no frames are read: nothing to count
  parts.push(`CLIP ${CLIP_FPS} fps × ${t.clipFrames}${maskAwayClip ? " (masked)" : ""}`);
  if (t.source === "video") {
    parts.push(`Synchformer ${SYNC_FPS} fps × ${t.syncFrames} (${plural(t.segments, "segment")})`);
  }
  return parts;
}

function sameRequest(a, b) {
  if (a === null || b === null) return a === b;
  return Math.abs(a - b) <= SAME_DURATION_EPS * Math.max(1, Math.abs(a));
}

function sourceMatches(timingSource, links) {
  if (links.images === null && links.video === null) return true; // links unknown: trust the payload
  const connected = Boolean(links.images || links.video);
  return connected ? timingSource !== "text" : timingSource === "text";
}

function clipPrefix(source, numFrames, fps, clipLength, estimate) {
  if (source === "text") return "no clip (text-to-audio)";
  if (source === "image") return "1 image (image-to-audio)";
  if (numFrames !== null && numFrames !== undefined && fps !== null && fps !== undefined && !estimate) {
    return `${plural(numFrames, "frame")} @ ${formatFps(fps)}`;
  }
  if (clipLength !== null && clipLength !== undefined) {
    const frames = numFrames ? `${plural(numFrames, "frame")}, ` : "";
    return `${frames}≈${formatSeconds(clipLength)} clip`;
  }
  return "clip";
}

const WINDOW_THRESHOLD_S = 10; // the backend's default: longer soundtracks run in overlapping windows
const LISTED_WINDOWS = 6;

function windowsText(windows) {
  const starts = windows.slice(0, LISTED_WINDOWS).map(([start]) => trimNumber(Math.round(start * 100) / 100));
  const more = windows.length > LISTED_WINDOWS ? ", …" : "";
  const length = trimNumber(Math.round((windows[0][1] - windows[0][0]) * 100) / 100);
  return `${windows.length} windows of ${length} s from ${starts.join(", ")}${more} s`;
}

function finish(prefix, t, { maskAwayClip, note, estimate }) {
  const parts = [`${prefix} → ${estimate ? "≈" : ""}${formatSeconds(t.duration)}`, ...countsText(t, maskAwayClip)];
  let level = LEVELS.ok;
  const notes = [];
  if (Array.isArray(t.windows) && t.windows.length > 1) {
    parts.push(windowsText(t.windows));
    notes.push("each window is conditioned on its own part of the clip; overlaps are blended at every step");
  } else if (!t.windows && t.duration > WINDOW_THRESHOLD_S) {
    notes.push(`longer than ${WINDOW_THRESHOLD_S} s: runs in overlapping 8 s windows`);
  }
  if (t.cut) {
    level = LEVELS.warn;
    parts.push(`cut from ${formatSeconds(t.requested)}`);
    notes.push(`${formatSeconds(t.requested)} requested is longer than the clip: cut to ${formatSeconds(t.duration)}`);
  }
  if (note) notes.push(note);
  return { text: parts.join(" · "), level, notes };
}

/**
 * @param {object} state
 * @param {number|null} state.duration      the duration widget's value (null: unknown, e.g. linked)
 * @param {boolean} [state.durationLinked]  the duration comes from a link (its value is not known here)
 * @param {number|null} [state.fps]         the fps widget (null when linked or not set)
 * @param {{images: boolean|null, video: boolean|null}} [state.links] which visual inputs are connected
 * @param {boolean} [state.maskAwayClip]
 * @param {object|null} [state.timing]      the last parsed `mmaudio_timing` payload (payload.parseTiming)
 * @returns {{text: string, level: "ok"|"warn"|"error", notes: string[]}}
 */
export function describeEncode(state = {}) {
  try {
    return describe(state ?? {});
  } catch (err) {
    return { text: "timing unavailable", level: LEVELS.warn, notes: [String(err?.message ?? err)] };
  }
}

function describe({ duration = null, durationLinked = false, fps = null, links = {}, maskAwayClip = false,
  timing = null }) {
  const link = { images: links?.images ?? null, video: links?.video ?? null };
  const widgetDuration = typeof duration === "number" && Number.isFinite(duration) ? duration : null;
  const requested = widgetDuration !== null && widgetDuration > 0 ? widgetDuration : null;
  const usable = timing && sourceMatches(timing.source, link) ? timing : null;

  if (usable && (durationLinked || sameRequest(requested, usable.requested))) {
    // The backend's own numbers for the current settings.
    const t = { ...usable, requested: usable.requested };
    const prefix = clipPrefix(t.source, t.numFrames, t.fps, t.clipLength, t.timestamps);
    return finish(prefix, t, { maskAwayClip: usable.maskAwayClip || maskAwayClip });
  }
  if (durationLinked) {
    return { text: "duration from a link: known after running", level: LEVELS.ok, notes: [] };
  }
  if (requested !== null && requested < MIN_DURATION_S) {
    return {
      text: `${formatSeconds(requested)} is shorter than the ${trimNumber(MIN_DURATION_S)} s minimum`,
      level: LEVELS.error,
      notes: ["one Synchformer segment (16 frames at 25 fps) is the shortest input"],
    };
  }

  if (usable) {
    // The clip of the last run, with the duration now in the widget.
    const numFrames = usable.source === "text" ? 0 : usable.source === "image" ? 1 : usable.numFrames;
    const t = computeTiming({
      numFrames,
      fps: usable.timestamps ? null : usable.fps,
      duration: requested,
      clipLength: usable.clipLength,
    });
    const estimate = Boolean(t.estimate);
    if (!t.ok) return { text: t.error ?? "invalid settings", level: LEVELS.error, notes: [] };
    const prefix = clipPrefix(t.source, usable.numFrames, usable.fps, t.clipLength ?? usable.clipLength, estimate);
    return finish(prefix, t, { maskAwayClip, estimate, note: "last run's clip; run again to confirm" });
  }

  const connected = Boolean(link.images || link.video);
  if (!connected && link.images !== null) {
    const t = computeTiming({ numFrames: 0, duration: requested });
    if (!t.ok) return { text: t.error ?? "invalid settings", level: LEVELS.error, notes: [] };
    const note = requested === null ? `no duration set: the ${trimNumber(t.duration)} s training length` : null;
    return finish(clipPrefix("text"), t, { maskAwayClip: false, note });
  }

  // A clip is connected but has not been seen yet: only the requested duration is known.
  const t = requestedTiming(requested);
  if (!t.ok) return { text: t.error ?? "invalid settings", level: LEVELS.error, notes: [] };
  if (requested === null) {
    const rate = fps !== null && fps > 0 ? ` @ ${formatFps(fps)}` : "";
    return { text: `clip${rate} → its full length (known after running)`, level: LEVELS.ok, notes: [] };
  }
  const parts = [`${formatSeconds(requested)} requested`, ...countsText(t, maskAwayClip)];
  return { text: parts.join(" · "), level: LEVELS.ok, notes: ["if the clip is at least that long"] };
}
