// MMAudio Sync: node widgets that Python alone cannot draw.
//
// - MMAudio Decode: a waveform of every generated sample (peaks sent by the node after it runs, key
//   "mmaudio_waveform"); clicking seeks a connected Preview Audio player; a spectrogram view is available from
//   the node's context menu when such a player holds the audio.
// - MMAudio Encode Conditions: a live line with the duration and frame counts the backend will use (from the
//   duration widget, the connected inputs and the "mmaudio_timing" payload of the last run).
// - MMAudio Download Weights: its last report (the preview text it sends after running) in a read-only box, so
//   no Preview Any node is needed to read it.
//
// Only this file touches ComfyUI; all logic lives in ./lib (plain ES modules, tested with `node --test js/tests/`).

import { app } from "../../scripts/app.js";

import { DEFAULT_THEME, drawSpectrogram, drawWaveforms, hitTest } from "./lib/draw.js";
import { describeEncode } from "./lib/encode_info.js";
import { booleanWidgetValue, findWidget, isLinked, linkedAudioElements, numericWidgetValue } from "./lib/graph.js";
import { parseTiming, parseWaveforms } from "./lib/payload.js";
import { reportHeight, reportText } from "./lib/report.js";
import { spectrogram } from "./lib/waveform.js";

const EXTENSION = "MMAudioSync.Widgets";
const DECODE_NODE = "MMAudioSyncDecode";
const ENCODE_NODE = "MMAudioSyncEncodeConditions";
const DOWNLOAD_NODE = "MMAudioSyncDownloadWeights";
const WAVEFORM_WIDGET = "mmaudio_waveform_view";
const INFO_WIDGET = "mmaudio_timing_info";
const REPORT_WIDGET = "mmaudio_report";
const REPORT_LINE_HEIGHT = 14;
const REPORT_MIN_HEIGHT = 40; // the box can be shrunk to this and scrolls; a run grows the node to fit the text
const REPORT_MIN_WIDTH = 420; // report lines name files and folders: wide enough that few of them wrap
const WIDGET_MARGIN = 20; // node width minus the DOM widget's width (its margins on both sides)
const LEVEL_COLORS = { ok: "var(--descrip-text, #999)", warn: "#e0a040", error: "#ff6060" };

function warnOnce(node, what, err) {
  node.__mmaudioWarned ??= new Set();
  if (node.__mmaudioWarned.has(what)) return;
  node.__mmaudioWarned.add(what);
  console.warn(`[MMAudio Sync] ${what}:`, err);
}

function chain(target, name, fn) {
  const original = target[name];
  target[name] = function (...args) {
    const r = original?.apply(this, args);
    try {
      fn.apply(this, args);
    } catch (err) {
      warnOnce(this, name, err);
    }
    return r;
  };
}

function cssVar(name, fallback) {
  try {
    const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return v || fallback;
  } catch {
    return fallback;
  }
}

function theme() {
  return {
    ...DEFAULT_THEME,
    background: cssVar("--comfy-input-bg", DEFAULT_THEME.background),
    rowBackground: cssVar("--comfy-menu-bg", DEFAULT_THEME.rowBackground),
    axis: cssVar("--border-color", DEFAULT_THEME.axis),
    text: cssVar("--input-text", DEFAULT_THEME.text),
    dim: cssVar("--descrip-text", DEFAULT_THEME.dim),
  };
}

function markDirty(node) {
  try {
    node.setDirtyCanvas?.(true, true);
    app.graph?.setDirtyCanvas?.(true, true);
  } catch {
    // nothing to redraw
  }
}

// ------------------------------------------------------------------------------------------------ waveform

function waveformHeight(count) {
  if (!count) return 48;
  return Math.min(60 * count + 4 * (count - 1), 280);
}

function addWaveformWidget(node) {
  const container = document.createElement("div");
  container.className = "mmaudio-sync-waveform";
  Object.assign(container.style, { width: "100%", height: "100%", position: "relative", cursor: "pointer" });
  const canvas = document.createElement("canvas");
  Object.assign(canvas.style, { width: "100%", height: "100%", display: "block", borderRadius: "4px" });
  container.append(canvas);

  const state = { entries: [], rows: [], view: "waveform", spec: null, specFor: null, audio: null, raf: 0,
    size: "", watched: new WeakSet() };

  const widget = node.addDOMWidget(WAVEFORM_WIDGET, "mmaudio_waveform", container, {
    serialize: false,
    hideOnZoom: true,
    getValue: () => "",
    setValue: () => {},
    getMinHeight: () => waveformHeight(state.entries.length),
    getMaxHeight: () => Math.max(waveformHeight(state.entries.length), 400),
    onDraw: () => {
      const key = `${container.clientWidth}x${container.clientHeight}`;
      if (key !== state.size) redraw();
    },
  });
  widget.serialize = false;

  function currentAudio() {
    const players = linkedAudioElements(node, node.graph ?? app.graph);
    return players.find((a) => a.src) ?? players[0] ?? null;
  }

  function watchAudio(audio) {
    if (!audio || state.watched.has(audio) || typeof audio.addEventListener !== "function") return;
    state.watched.add(audio);
    for (const type of ["play", "pause", "seeked", "timeupdate", "ended", "loadeddata"]) {
      audio.addEventListener(type, () => {
        if (type === "loadeddata") {
          state.spec = null; // a new run's audio
          if (state.view === "spectrogram") loadSpectrogram();
        }
        redraw();
        if (type === "play") animate();
      });
    }
  }

  function animate() {
    if (state.raf) return;
    const step = () => {
      state.raf = 0;
      redraw();
      if (state.audio && !state.audio.paused) state.raf = requestAnimationFrame(step);
    };
    state.raf = requestAnimationFrame(step);
  }

  function redraw() {
    try {
      const width = container.clientWidth;
      const height = container.clientHeight;
      state.size = `${width}x${height}`;
      if (!(width > 0 && height > 0)) return;
      const dpr = window.devicePixelRatio || 1;
      const w = Math.round(width * dpr);
      const h = Math.round(height * dpr);
      if (canvas.width !== w) canvas.width = w;
      if (canvas.height !== h) canvas.height = h;
      const ctx = canvas.getContext("2d");
      if (!ctx) return;
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      state.audio = currentAudio();
      watchAudio(state.audio);
      if (state.view === "spectrogram" && state.spec && drawSpectrogram(ctx, state.spec, { width: w, height: h })) {
        state.rows = [{ entry: 0, x: 0, y: 0, width, height }];
        const first = state.entries[0];
        if (state.audio && first?.duration > 0) {
          ctx.fillStyle = DEFAULT_THEME.playhead;
          ctx.fillRect(Math.round((state.audio.currentTime / first.duration) * w), 0, Math.max(1, dpr), h);
        }
        return;
      }
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      const playhead = state.audio && state.audio.src ? { entry: 0, time: state.audio.currentTime } : null;
      const emptyText = state.view === "spectrogram"
        ? "spectrogram: connect Preview Audio and run"
        : "run the workflow to see the waveform";
      state.rows = drawWaveforms(ctx, state.entries, { width, height, theme: theme(), playhead, emptyText });
    } catch (err) {
      warnOnce(node, "drawing the waveform", err);
    }
  }

  async function loadSpectrogram() {
    const audio = currentAudio();
    if (!audio?.src) {
      state.spec = null;
      redraw();
      return;
    }
    if (state.spec && state.specFor === audio.src) return;
    try {
      const response = await fetch(audio.src);
      const buffer = await response.arrayBuffer();
      const Offline = window.OfflineAudioContext || window.webkitOfflineAudioContext;
      // decodeAudioData resamples to the context's rate: use the generated audio's own rate
      const rate = state.entries[0]?.sampleRate;
      const contextRate = rate >= 8000 && rate <= 192000 ? rate : 44100;
      const decoded = await new Offline(1, 1, contextRate).decodeAudioData(buffer);
      const channels = [];
      for (let c = 0; c < decoded.numberOfChannels; c++) channels.push(decoded.getChannelData(c));
      const columns = Math.max(64, Math.min(1024, Math.round(container.clientWidth * (window.devicePixelRatio || 1))));
      state.spec = { ...spectrogram(channels, { fftSize: 2048, columns }), sampleRate: decoded.sampleRate };
      state.specFor = audio.src;
    } catch (err) {
      state.spec = null;
      warnOnce(node, "loading the audio for the spectrogram", err);
    }
    redraw();
  }

  canvas.addEventListener("pointerdown", (event) => {
    try {
      const rect = canvas.getBoundingClientRect();
      const sx = rect.width ? container.clientWidth / rect.width : 1;
      const sy = rect.height ? container.clientHeight / rect.height : 1;
      const hit = hitTest(state.rows, state.entries, (event.clientX - rect.left) * sx, (event.clientY - rect.top) * sy);
      const audio = currentAudio();
      if (!hit || hit.time === null || !audio?.src || hit.entry !== 0) return;
      audio.currentTime = hit.time;
      audio.play?.()?.catch?.(() => {});
      event.stopPropagation();
      redraw();
    } catch (err) {
      warnOnce(node, "seeking the audio preview", err);
    }
  });
  canvas.title = "Click the first waveform to play it in a connected Preview Audio node";

  if (typeof ResizeObserver === "function") new ResizeObserver(() => redraw()).observe(container);

  widget.onRemove = ((original) => function () {
    if (state.raf) cancelAnimationFrame(state.raf);
    return original?.apply(this, arguments);
  })(widget.onRemove);

  return {
    setMessage(message) {
      state.entries = parseWaveforms(message);
      state.spec = null;
      if (node.size && node.computeSize) {
        const wanted = node.computeSize();
        if (node.size[1] < wanted[1]) node.setSize?.([node.size[0], wanted[1]]);
      }
      redraw();
      if (state.view === "spectrogram") loadSpectrogram();
      markDirty(node);
    },
    toggleView() {
      state.view = state.view === "waveform" ? "spectrogram" : "waveform";
      if (state.view === "spectrogram") loadSpectrogram();
      redraw();
    },
    get view() {
      return state.view;
    },
  };
}

// ------------------------------------------------------------------------------------------- timing line

function addInfoWidget(node) {
  const line = document.createElement("div");
  line.className = "mmaudio-sync-timing";
  Object.assign(line.style, {
    fontSize: "11px",
    lineHeight: "14px",
    padding: "2px 6px",
    boxSizing: "border-box",
    overflow: "hidden",
    whiteSpace: "normal",
    wordBreak: "break-word",
    color: LEVEL_COLORS.ok,
    fontFamily: "sans-serif",
  });
  const state = { timing: null, key: "" };

  const widget = node.addDOMWidget(INFO_WIDGET, "mmaudio_timing_info", line, {
    serialize: false,
    hideOnZoom: true,
    getValue: () => "",
    setValue: () => {},
    margin: 4,
    getMinHeight: () => 44,
    getMaxHeight: () => 60,
    onDraw: () => update(),
  });
  widget.serialize = false;

  function read() {
    return {
      duration: numericWidgetValue(node, "duration"),
      durationLinked: isLinked(node, "duration") === true,
      fps: numericWidgetValue(node, "fps"),
      links: { images: isLinked(node, "images"), video: isLinked(node, "video") },
      maskAwayClip: booleanWidgetValue(node, "mask_away_clip"),
      timing: state.timing,
    };
  }

  function update(force = false) {
    try {
      const s = read();
      const key = JSON.stringify({ ...s, timing: s.timing ? 1 : 0 }) + (state.timingStamp ?? "");
      if (!force && key === state.key) return;
      state.key = key;
      const info = describeEncode(s);
      line.textContent = info.text;
      line.style.color = LEVEL_COLORS[info.level] ?? LEVEL_COLORS.ok;
      line.title = info.notes.join("\n");
    } catch (err) {
      warnOnce(node, "updating the timing line", err);
    }
  }

  const duration = findWidget(node, "duration");
  if (duration) {
    const original = duration.callback;
    duration.callback = function (...args) {
      const r = original?.apply(this, args);
      update(true);
      return r;
    };
  }
  update(true);

  return {
    setMessage(message) {
      const timing = parseTiming(message);
      if (timing) {
        state.timing = timing;
        state.timingStamp = Date.now();
      }
      update(true);
    },
    update,
  };
}

// ------------------------------------------------------------------------------------------- report box

// Grow the node (never shrink it: the user may have sized it) so the box is `wanted` px high instead of its minimum.
function fitReport(node, wanted) {
  if (!node.size || !node.computeSize) return;
  const width = Math.max(node.size[0], REPORT_MIN_WIDTH);
  const height = Math.max(node.size[1], node.computeSize()[1] + wanted - REPORT_MIN_HEIGHT);
  if (width !== node.size[0] || height !== node.size[1]) node.setSize?.([width, height]);
}

function addReportWidget(node) {
  const box = document.createElement("textarea");
  box.className = "comfy-multiline-input mmaudio-sync-report"; // ComfyUI's own text box look
  box.readOnly = true; // readonly, not disabled: the paths in it stay selectable and copyable
  box.spellcheck = false;
  box.title = "The last report of this node (not saved with the workflow)";
  Object.assign(box.style, {
    width: "100%",
    height: "100%",
    boxSizing: "border-box",
    resize: "none",
    padding: "4px",
    fontFamily: "monospace",
    fontSize: "11px",
    lineHeight: `${REPORT_LINE_HEIGHT}px`,
    whiteSpace: "pre-wrap",
  });

  // value stays "": the report belongs to a run, and saved workflows keep only the node's declared inputs
  const widget = node.addDOMWidget(REPORT_WIDGET, "mmaudio_report", box, {
    serialize: false,
    hideOnZoom: true,
    getValue: () => "",
    setValue: () => {},
    getMinHeight: () => REPORT_MIN_HEIGHT,
  });
  widget.serialize = false;

  return {
    setText(text) {
      box.value = text;
      box.scrollTop = 0;
      const width = Math.max(node.size?.[0] ?? 0, REPORT_MIN_WIDTH) - WIDGET_MARGIN;
      fitReport(node, reportHeight(text, { width, lineHeight: REPORT_LINE_HEIGHT, minHeight: REPORT_MIN_HEIGHT }));
      markDirty(node);
    },
  };
}

// ------------------------------------------------------------------------------------------- registration

app.registerExtension({
  name: EXTENSION,
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const name = nodeData?.name;
    if (name === DECODE_NODE) {
      const proto = nodeType.prototype;
      chain(proto, "onNodeCreated", function () {
        this.__mmaudioWaveform = addWaveformWidget(this);
      });
      chain(proto, "onExecuted", function (message) {
        this.__mmaudioWaveform?.setMessage(message);
      });
      chain(proto, "getExtraMenuOptions", function (_canvas, options) {
        const view = this.__mmaudioWaveform;
        if (!view || !Array.isArray(options)) return;
        options.push({
          content: view.view === "waveform" ? "MMAudio: show spectrogram" : "MMAudio: show waveform",
          callback: () => view.toggleView(),
        });
      });
    } else if (name === ENCODE_NODE) {
      const proto = nodeType.prototype;
      chain(proto, "onNodeCreated", function () {
        this.__mmaudioTiming = addInfoWidget(this);
      });
      chain(proto, "onExecuted", function (message) {
        this.__mmaudioTiming?.setMessage(message);
      });
      for (const hook of ["onConfigure", "onConnectionsChange", "onWidgetChanged"]) {
        chain(proto, hook, function () {
          this.__mmaudioTiming?.update(true);
        });
      }
    } else if (name === DOWNLOAD_NODE) {
      // the box appears with the first report, so a node that never ran stays compact
      chain(nodeType.prototype, "onExecuted", function (message) {
        const text = reportText(message);
        if (text === null) return;
        this.__mmaudioReport ??= addReportWidget(this);
        this.__mmaudioReport.setText(text);
      });
    }
  },
});
