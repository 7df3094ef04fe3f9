import assert from "node:assert/strict";
import { test } from "node:test";

import { booleanWidgetValue, downstreamNodes, findWidget, isLinked, linkedAudioElements,
  numericWidgetValue } from "../lib/graph.js";

const audioElement = () => ({ tagName: "AUDIO", src: "x.flac", play() {} });

function nodes() {
  const player = { id: 2, widgets: [{ name: "audio", value: "" }, { name: "audioUI", element: audioElement() }] };
  const other = { id: 3, widgets: [{ name: "x", element: { tagName: "DIV" } }] };
  const source = {
    id: 1,
    widgets: [{ name: "duration", value: 5 }, { name: "fps", value: "24" }, { name: "mask_away_clip", value: true }],
    inputs: [{ name: "images", link: 7 }, { name: "video", link: null }, { name: "fps", widget: { name: "fps" }, link: 9 }],
    outputs: [{ links: [11, 12, 13] }, { links: null }],
  };
  return { player, other, source };
}

test("widget values and links", () => {
  const { source } = nodes();
  assert.equal(findWidget(source, "duration").value, 5);
  assert.equal(findWidget(source, "nope"), null);
  assert.equal(numericWidgetValue(source, "duration"), 5);
  assert.equal(numericWidgetValue(source, "fps"), null); // linked
  assert.equal(isLinked(source, "images"), true);
  assert.equal(isLinked(source, "video"), false);
  assert.equal(isLinked(source, "duration"), null);
  assert.equal(booleanWidgetValue(source, "mask_away_clip"), true);
  assert.equal(numericWidgetValue(null, "duration"), null);
  assert.equal(isLinked({ inputs: 5 }, "x"), null);
});

for (const [kind, makeGraph] of [
  ["a Map of links", (l, byId) => ({ links: new Map(Object.entries(l).map(([k, v]) => [Number(k), v])), getNodeById: byId })],
  ["an object of links", (l, byId) => ({ links: l, getNodeById: byId })],
  ["getLink()", (l, byId) => ({ getLink: (id) => l[id], getNodeById: byId })],
]) {
  test(`downstream players through ${kind}`, () => {
    const { player, other, source } = nodes();
    const links = { 11: { target_id: 2 }, 12: { target_id: 3 }, 13: { target_id: 2 } };
    const byId = (id) => ({ 2: player, 3: other })[id] ?? null;
    const graph = makeGraph(links, byId);
    assert.deepEqual(downstreamNodes(source, graph), [player, other]);
    const players = linkedAudioElements(source, graph);
    assert.equal(players.length, 1);
    assert.equal(players[0], player.widgets[1].element);
  });
}

test("broken graphs give nothing", () => {
  const { source } = nodes();
  assert.deepEqual(linkedAudioElements(source, null), []);
  assert.deepEqual(linkedAudioElements(source, { getLink() { throw new Error("boom"); } }), []);
  assert.deepEqual(linkedAudioElements({}, {}), []);
});
