// The entry file (js/mmaudio_sync.js) against a stand-in of ComfyUI's app and a minimal DOM: it registers its
// extension, adds its widgets to its own nodes only, and survives malformed payloads.
import assert from "node:assert/strict";
import { register } from "node:module";
import { test } from "node:test";

const hooks = `
export async function resolve(specifier, context, next) {
  if (specifier.endsWith("/scripts/app.js")) {
    return { url: "data:text/javascript,export const app = globalThis.__mmaudioFakeApp;", shortCircuit: true };
  }
  return next(specifier, context);
}`;
register(`data:text/javascript,${encodeURIComponent(hooks)}`);

const warnings = [];
const drawn = [];

function fakeContext() {
  return new Proxy({}, {
    get(target, prop) {
      if (prop in target) return target[prop];
      return (...args) => drawn.push([prop, ...args]);
    },
    set(target, prop, value) {
      target[prop] = value;
      return true;
    },
  });
}

function element(tagName) {
  const listeners = {};
  return {
    tagName: tagName.toUpperCase(),
    style: {},
    children: [],
    listeners,
    clientWidth: 300,
    clientHeight: 124,
    width: 0,
    height: 0,
    textContent: "",
    title: "",
    append(...c) {
      this.children.push(...c);
    },
    addEventListener(type, fn) {
      (listeners[type] ??= []).push(fn);
    },
    getContext: () => fakeContext(),
    getBoundingClientRect: () => ({ left: 0, top: 0, width: 300, height: 124 }),
  };
}

globalThis.document = { createElement: element, documentElement: {} };
globalThis.window = globalThis;
globalThis.devicePixelRatio = 2;
globalThis.getComputedStyle = () => ({ getPropertyValue: () => "" });
globalThis.requestAnimationFrame = () => 0;
globalThis.cancelAnimationFrame = () => {};
const extensions = [];
const graph = { links: {}, getNodeById: () => null, setDirtyCanvas() {} };
globalThis.__mmaudioFakeApp = { registerExtension: (e) => extensions.push(e), graph };
const originalWarn = console.warn;
console.warn = (...args) => warnings.push(args);

await import("../mmaudio_sync.js");

class FakeNode {
  constructor(widgets = [], inputs = []) {
    this.widgets = widgets;
    this.inputs = inputs;
    this.outputs = [{ links: [] }];
    this.size = [320, 100];
    this.graph = graph;
  }

  addDOMWidget(name, type, el, options) {
    const w = { name, type, element: el, options };
    this.widgets.push(w);
    return w;
  }

  computeSize() {
    return [320, 200];
  }

  setSize(size) {
    this.size = size;
  }

  setDirtyCanvas() {}
}

async function nodeClass(name, base = {}) {
  const type = class extends FakeNode {};
  Object.assign(type.prototype, base);
  for (const e of extensions) await e.beforeRegisterNodeDef?.(type, { name });
  return type;
}

test("one extension, namespaced", () => {
  assert.equal(extensions.length, 1);
  assert.match(extensions[0].name, /^MMAudioSync\./);
});

test("other nodes are left alone", async () => {
  const type = await nodeClass("PreviewAudio");
  assert.equal(type.prototype.onNodeCreated, undefined);
  assert.equal(type.prototype.onExecuted, undefined);
});

test("decode node: waveform widget, payloads, menu and seeking", async () => {
  let originalCalls = 0;
  const type = await nodeClass("MMAudioSyncDecode", { onExecuted() { originalCalls++; } });
  const node = new type();
  node.onNodeCreated();
  const widget = node.widgets.find((w) => w.name === "mmaudio_waveform_view");
  assert.ok(widget);
  assert.equal(widget.serialize, false);
  assert.equal(widget.options.serialize, false);

  for (const garbage of [undefined, null, 5, "x", { mmaudio_waveform: "no" }, { mmaudio_waveform: [null, {}] }]) {
    node.onExecuted(garbage);
  }
  assert.equal(originalCalls, 6);

  drawn.length = 0;
  node.onExecuted({ mmaudio_waveform: [{ index: 0, peaks: [[-0.5, 0.5], [-0.2, 0.3]], sample_rate: 44100,
    duration: 8, peak: 0.5 }] });
  assert.ok(drawn.some((c) => c[0] === "fillText" && /8\.00 s/.test(c[1])));
  assert.ok(widget.options.getMinHeight() >= 48);

  const options = [];
  node.getExtraMenuOptions({}, options);
  assert.equal(options.length, 1);
  assert.match(options[0].content, /spectrogram/);

  // a Preview Audio player after the node: clicking the waveform seeks it
  const audio = { tagName: "AUDIO", src: "/view?x.flac", currentTime: 0, paused: true, played: 0,
    play() { this.played++; return Promise.resolve(); }, addEventListener() {} };
  const player = { widgets: [{ name: "audioUI", element: audio }] };
  graph.links = { 5: { target_id: 9 } };
  graph.getNodeById = (id) => (id === 9 ? player : null);
  node.outputs = [{ links: [5] }];
  const canvas = widget.element.children[0];
  for (const fn of canvas.listeners.pointerdown) fn({ clientX: 150, clientY: 30, stopPropagation() {} });
  assert.equal(audio.currentTime, 4);
  assert.equal(audio.played, 1);
});

test("encode node: a live timing line", async () => {
  const duration = { name: "duration", value: 0, callback: null };
  const type = await nodeClass("MMAudioSyncEncodeConditions");
  const node = new type([duration, { name: "fps", value: 0 }, { name: "mask_away_clip", value: false }],
    [{ name: "images", link: 3 }, { name: "video", link: null }, { name: "duration", widget: { name: "duration" },
      link: null }]);
  node.onNodeCreated();
  const info = node.widgets.find((w) => w.name === "mmaudio_timing_info");
  assert.ok(info);
  assert.equal(info.serialize, false);
  const line = info.element;
  assert.match(line.textContent, /full length/);

  duration.value = 0.3;
  duration.callback?.(0.3);
  assert.match(line.textContent, /0\.64/);
  assert.equal(line.style.color, "#ff6060");

  duration.value = 0;
  node.onExecuted({ mmaudio_timing: [{ source: "video", num_frames: 96, fps: 24, duration: 3.96, clip_frames: 31,
    sync_frames: 99, segments: 11 }] });
  assert.match(line.textContent, /^96 frames @ 24 fps → 3\.96 s · CLIP 8 fps × 31 · Synchformer 25 fps × 99 \(11 segments\)$/);

  duration.value = 6;
  info.options.onDraw(); // the widget polls on every canvas frame
  assert.match(line.style.color, /#e0a040/);

  for (const garbage of [undefined, null, { mmaudio_timing: [{}] }, { mmaudio_timing: "x" }]) node.onExecuted(garbage);
  node.onConfigure?.({});
  node.onConnectionsChange?.();
});

test("download node: the last report in a read-only box, created once", async () => {
  let originalCalls = 0;
  const type = await nodeClass("MMAudioSyncDownloadWeights", { onExecuted() { originalCalls++; } });
  const variant = { name: "variant", value: "large_44k_v2" };
  const node = new type([variant]);
  node.onNodeCreated?.();
  for (const nothing of [undefined, null, {}, { text: [] }, { text: [null] }, { images: [] }]) node.onExecuted(nothing);
  assert.equal(originalCalls, 6);
  assert.equal(node.widgets.length, 1, "no box before the first report");

  node.onExecuted({ text: ["MMAudio large_44k_v2\nfound a\nfound b"] });
  const box = node.widgets.find((w) => w.name === "mmaudio_report");
  assert.ok(box);
  assert.equal(box.serialize, false);
  assert.equal(box.options.serialize, false);
  assert.equal(box.options.getValue(), "", "nothing of the report goes into the workflow");
  assert.equal(box.element.tagName, "TEXTAREA");
  assert.equal(box.element.readOnly, true);
  assert.equal(box.element.value, "MMAudio large_44k_v2\nfound a\nfound b");
  assert.ok(node.size[0] >= 420 && node.size[1] > 200, `node grew to show the report: ${node.size}`);

  const lines = Array.from({ length: 12 }, (_, i) => `fetched file ${i}`).join("\n");
  node.onExecuted({ text: lines });
  assert.equal(node.widgets.filter((w) => w.name === "mmaudio_report").length, 1);
  assert.equal(box.element.value, lines);
  const grown = node.size[1];

  node.onExecuted({ text: ["short"] });
  node.onExecuted({ text: null }); // no text: the last report stays
  assert.equal(box.element.value, "short");
  assert.equal(node.size[1], grown, "a shorter report never shrinks the node");
  assert.deepEqual(node.widgets.map((w) => w.name), ["variant", "mmaudio_report"]);
});

test("no warnings on the happy path", () => {
  console.warn = originalWarn;
  assert.deepEqual(warnings, []);
});
