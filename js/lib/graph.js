// Small, duck-typed reads of a LiteGraph node and graph (widget values, links, downstream audio players).
//
// ComfyUI's frontend changes its graph internals between versions (graph.links was an object, then a Map;
// widget inputs gained sockets), so every access here is tolerant and returns null/[] instead of throwing.

function safe(fn, fallback) {
  try {
    const v = fn();
    return v === undefined ? fallback : v;
  } catch {
    return fallback;
  }
}

/** The widget called `name`, or null. */
export function findWidget(node, name) {
  return safe(() => node.widgets?.find((w) => w?.name === name) ?? null, null);
}

/** The input slot called `name` (a socket, or a widget's input socket), or null. */
export function findInput(node, name) {
  return safe(() => node.inputs?.find((i) => i?.name === name || i?.widget?.name === name) ?? null, null);
}

/** Whether input `name` is connected: true / false, or null when the node has no such input socket. */
export function isLinked(node, name) {
  const input = findInput(node, name);
  if (input === null) return null;
  return input.link !== null && input.link !== undefined;
}

/** A widget's numeric value, or null (missing, linked, not a finite number). */
export function numericWidgetValue(node, name) {
  if (isLinked(node, name) === true) return null;
  const w = findWidget(node, name);
  const v = typeof w?.value === "string" ? Number(w.value) : w?.value;
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

/** A widget's boolean value (false when missing). */
export function booleanWidgetValue(node, name) {
  return findWidget(node, name)?.value === true;
}

export function getLink(graph, id) {
  return safe(() => {
    if (id === null || id === undefined || !graph) return null;
    if (typeof graph.getLink === "function") return graph.getLink(id) ?? null;
    const links = graph.links;
    if (links && typeof links.get === "function") return links.get(id) ?? null;
    return links?.[id] ?? null;
  }, null);
}

/** Nodes fed by any output of `node` (one level), without duplicates. */
export function downstreamNodes(node, graph) {
  const found = [];
  const outputs = safe(() => node.outputs ?? [], []);
  for (const output of outputs) {
    for (const id of safe(() => output?.links ?? [], [])) {
      const link = getLink(graph, id);
      const target = link ? safe(() => graph.getNodeById(link.target_id), null) : null;
      if (target && !found.includes(target)) found.push(target);
    }
  }
  return found;
}

function isAudioElement(el) {
  return !!el && typeof el === "object" && String(el.tagName ?? "").toUpperCase() === "AUDIO"
    && typeof el.play === "function";
}

/** <audio> elements of the players (e.g. core Preview Audio's) directly connected after `node`. */
export function linkedAudioElements(node, graph) {
  const out = [];
  for (const target of downstreamNodes(node, graph)) {
    for (const w of safe(() => target.widgets ?? [], [])) {
      const el = safe(() => w?.element, null);
      if (isAudioElement(el) && !out.includes(el)) out.push(el);
    }
  }
  return out;
}
