/**
 * The layer rule, enforced: src/'s import graph keeps docs/CONVENTIONS.md's order, and the
 * checker itself is tested on made-up graphs (one that keeps the rule, ones that break it) and on
 * a small folder read through `deno info`, so a wrong-way import cannot slip past it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { importGraph, sourceFiles } from "./import_graph.ts";
import { checkLayers, describeLayers, type LayerRule, reportLines } from "./layer_check.ts";
import { QLORAD_LAYERS } from "./qlorad_layers.ts";

const root = new URL("../..", import.meta.url).pathname;

/** A made-up rule: base <- {left, right} <- top, and `pkg:net` only from top. */
const RULE: LayerRule = {
  tiers: [
    [{ name: "base", paths: ["s/base/"] }],
    [{ name: "left", paths: ["s/left/"] }, { name: "right", paths: ["s/right/", "s/base/r.ts"] }],
    [{ name: "top", paths: ["s/top/"] }],
  ],
  packages: { "npm:net": "top" },
};
const FILES = ["s/base/a.ts", "s/base/r.ts", "s/left/l.ts", "s/right/q.ts", "s/top/t.ts"];
const GOOD = [
  { from: "s/top/t.ts", to: "s/left/l.ts" },
  { from: "s/top/t.ts", to: "s/right/q.ts" },
  { from: "s/top/t.ts", to: "npm:net" },
  { from: "s/left/l.ts", to: "s/base/a.ts" },
  { from: "s/left/l.ts", to: "s/right/q.ts" }, // a peer
  { from: "s/right/q.ts", to: "s/base/a.ts" },
  { from: "s/base/r.ts", to: "s/base/a.ts" }, // a file owned by a higher layer than its folder
  { from: "s/base/a.ts", to: "node:path" },
];

Deno.test("layers: a graph that keeps the rule passes", () => {
  assert.deepEqual(reportLines(checkLayers(RULE, FILES, GOOD)), []);
  assert.equal(describeLayers(RULE), "top -> left, right -> base");
});

Deno.test("layers: a wrong-way import is reported file -> file with both layers", () => {
  const r = checkLayers(RULE, FILES, [...GOOD, { from: "s/base/a.ts", to: "s/top/t.ts" }]);
  assert.deepEqual(r.wrongWay, ["s/base/a.ts (base) -> s/top/t.ts (top): base is below top"]);
  // base -> top -> left -> base closes a loop too.
  assert.equal(r.cycles.length, 1);
  assert.match(r.cycles[0], /^cycle between layers base -> top -> left -> base:/);
  assert.match(r.cycles[0], /s\/base\/a\.ts -> s\/top\/t\.ts/);
});

Deno.test("layers: the folder owning a file does not decide its layer when a file entry does", () => {
  // s/base/r.ts belongs to `right`: importing it from base is upwards.
  const r = checkLayers(RULE, FILES, [...GOOD, { from: "s/base/a.ts", to: "s/base/r.ts" }]);
  assert.deepEqual(r.wrongWay, ["s/base/a.ts (base) -> s/base/r.ts (right): base is below right"]);
});

Deno.test("layers: peers importing each other are a cycle", () => {
  const r = checkLayers(RULE, FILES, [...GOOD, { from: "s/right/q.ts", to: "s/left/l.ts" }]);
  assert.deepEqual(r.wrongWay, []);
  assert.deepEqual(r.cycles, [
    "cycle between layers left -> right -> left:\n" +
    "  s/left/l.ts -> s/right/q.ts\n" +
    "  s/right/q.ts -> s/left/l.ts",
  ]);
});

Deno.test("layers: a limited package below its tier, an unplaced file and an outside import", () => {
  const r = checkLayers(RULE, [...FILES, "s/new/n.ts"], [
    ...GOOD,
    { from: "s/left/l.ts", to: "npm:net" },
    { from: "s/right/q.ts", to: "tests/helper.ts" },
  ]);
  assert.deepEqual(r.packages, ["s/left/l.ts (left) -> npm:net: only top and above may"]);
  assert.deepEqual(r.unplaced, [
    "s/new/n.ts: no layer owns this file",
    "s/right/q.ts (right) -> tests/helper.ts: imports a file outside every layer",
  ]);
});

Deno.test("layers: deno info's graph has type-only, re-export and dynamic imports", async () => {
  const dir = await Deno.makeTempDir({ prefix: "layers_test_" });
  try {
    const write = async (path: string, text: string) => {
      await Deno.mkdir(join(dir, path, ".."), { recursive: true });
      await Deno.writeTextFile(join(dir, path), text);
    };
    await write("s/top/t.ts", "export const t = 1;\nexport type T = number;\n");
    await write("s/left/l.ts", 'export { t } from "../top/t.ts";\n');
    await write("s/right/q.ts", 'import type { T } from "../top/t.ts";\nexport const q: T = 2;\n');
    await write("s/base/a.ts", 'export const a = () => import("../top/t.ts");\n');
    await write("s/base/r.ts", 'import "node:path";\n');
    const files = await sourceFiles(dir, "s");
    assert.deepEqual(files, FILES.filter((f) => f !== "s/base/r.ts").concat("s/base/r.ts").sort());
    const edges = await importGraph(dir, files);
    assert.deepEqual(
      edges.map((e) => `${e.from} -> ${e.to}`).sort(),
      [
        "s/base/a.ts -> s/top/t.ts",
        "s/base/r.ts -> node:path",
        "s/left/l.ts -> s/top/t.ts",
        "s/right/q.ts -> s/top/t.ts",
      ],
    );
    const r = checkLayers(RULE, files, edges);
    assert.equal(r.wrongWay.length, 3);
    assert.match(r.wrongWay.join("\n"), /s\/right\/q\.ts \(right\) -> s\/top\/t\.ts \(top\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("layers: src/ keeps the layer rule", async () => {
  const files = await sourceFiles(root, "src");
  const edges = await importGraph(root, files);
  assert.ok(edges.length > files.length, `only ${edges.length} imports read from src/`);
  const problems = reportLines(checkLayers(QLORAD_LAYERS, files, edges));
  assert.deepEqual(problems, [], "\n" + problems.join("\n"));
});

Deno.test("layers: docs/CONVENTIONS.md states the rule as the test holds it", async () => {
  const doc = await Deno.readTextFile(join(root, "docs/CONVENTIONS.md"));
  const rule = describeLayers(QLORAD_LAYERS);
  assert.ok(doc.includes("`" + rule + "`"), `docs/CONVENTIONS.md lacks \`${rule}\``);
});
