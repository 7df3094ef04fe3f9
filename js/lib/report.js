// The text report of the download node (nodes/download.py), shown on the node after it runs.
//
// The node sends its report as ComfyUI's preview text: `{text: [report]}` from `ui.PreviewText`, or the same
// dict built by hand on older ComfyUI. These functions never throw: a message without text gives null, so the
// node keeps showing its previous report.

export const REPORT_KEY = "text";
export const MAX_CHARS = 100_000; // a real report is a few lines; never push megabytes into a textarea
const JOINER = "\n\n"; // how ComfyUI's own Preview Any joins several texts

function isObject(x) {
  return x !== null && typeof x === "object" && !Array.isArray(x);
}

function clip(text) {
  return text.length > MAX_CHARS ? `${text.slice(0, MAX_CHARS)}\n…` : text;
}

/** The report carried by an executed message (`{text: [...]}` or `{text: "..."}`), or null when it has none. */
export function reportText(message) {
  if (!isObject(message)) return null;
  const value = message[REPORT_KEY];
  // a list is the normal shape; several entries come from a node run once per item of a list input
  const parts = (Array.isArray(value) ? value : [value]).filter((p) => typeof p === "string" && p.trim() !== "");
  return parts.length ? clip(parts.join(JOINER)) : null;
}

/** How many rows `text` takes in a box `columns` characters wide, counting soft wraps of long lines. */
export function reportRows(text, columns) {
  if (typeof text !== "string" || text === "") return 0;
  const width = Number.isFinite(columns) && columns >= 1 ? Math.floor(columns) : Infinity;
  let rows = 0;
  for (const line of text.split("\n")) rows += Math.max(1, Math.ceil(line.length / width));
  return rows;
}

/**
 * The height in pixels that shows `text` whole in a box `width` pixels wide, within [minHeight, maxHeight]
 * (beyond that the box scrolls). Widths are estimated from a monospace character width.
 */
export function reportHeight(text, { width, charWidth = 6.6, lineHeight = 14, padding = 8, minHeight = 40,
  maxHeight = 320 } = {}) {
  const columns = (width - padding) / charWidth;
  const height = reportRows(text, columns) * lineHeight + padding;
  return Math.round(Math.min(Math.max(height, minHeight), maxHeight));
}
