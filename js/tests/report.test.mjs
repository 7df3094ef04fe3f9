import assert from "node:assert/strict";
import { test } from "node:test";

import { MAX_CHARS, REPORT_KEY, reportHeight, reportRows, reportText } from "../lib/report.js";

const REPORT = "MMAudio large_44k_v2, Kijai fp16 safetensors: network\nfound mmaudio_large_44k_v2_fp16.safetensors";

test("the report of a preview-text message", () => {
  assert.equal(reportText({ [REPORT_KEY]: [REPORT] }), REPORT);
  assert.equal(reportText({ text: REPORT }), REPORT);
  assert.equal(reportText({ text: ["a", "b"] }), "a\n\nb");
});

test("messages without text give null, without throwing", () => {
  const garbage = [undefined, null, 0, "text", [], ["a"], {}, { text: null }, { text: 5 }, { text: [] },
    { text: [null, 3, {}] }, { text: "" }, { text: ["  ", "\n"] }, { images: [{ filename: "a.png" }] }];
  for (const message of garbage) assert.equal(reportText(message), null, JSON.stringify(message));
});

test("non-text entries are skipped, huge reports are cut", () => {
  assert.equal(reportText({ text: [null, "a", 7] }), "a");
  const huge = reportText({ text: ["x".repeat(MAX_CHARS + 10)] });
  assert.equal(huge.length, MAX_CHARS + 2);
  assert.ok(huge.endsWith("\n…"));
});

test("rows count lines and soft wraps", () => {
  assert.equal(reportRows("", 40), 0);
  assert.equal(reportRows(null, 40), 0);
  assert.equal(reportRows("a\nb\n\nc", 40), 4);
  assert.equal(reportRows("x".repeat(100), 40), 3);
  assert.equal(reportRows("x".repeat(100), NaN), 1);
  assert.equal(reportRows("x".repeat(100), 0), 1);
});

test("height fits the text within bounds", () => {
  assert.equal(reportHeight("a\nb\nc", { width: 400 }), 3 * 14 + 8);
  assert.equal(reportHeight("a", { width: 400 }), 40);
  assert.equal(reportHeight("a\n".repeat(100), { width: 400 }), 320);
  assert.equal(reportHeight("x".repeat(120), { width: 408, charWidth: 10, padding: 8 }), 3 * 14 + 8);
  assert.equal(reportHeight("x".repeat(200), { width: 408, charWidth: 10, padding: 8 }), 5 * 14 + 8);
  assert.equal(reportHeight("a\nb\nc", { width: undefined }), 50);
});
