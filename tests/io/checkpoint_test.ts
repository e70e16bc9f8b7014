import assert from "node:assert/strict";
import { join } from "node:path";
import { OutputDir, writeFileAtomic } from "../../src/io/atomic.ts";
import { HfCheckpoint } from "../../src/io/checkpoint.ts";
import { jsonErrorOffset, lineColumn, parseJsonText } from "../../src/util/json.ts";
import { fromFloat } from "../../src/io/dtype.ts";
import { type TensorData, writeSafetensors } from "../../src/io/safetensors.ts";
import { QloradError } from "../../src/util/errors.ts";
import { Rng } from "../../src/util/random.ts";

const CONFIG = { model_type: "llama", hidden_size: 6, num_hidden_layers: 1, vocab_size: 5 };

function tensors(rng: Rng): TensorData[] {
  const t = (name: string, shape: number[], dtype: "F32" | "BF16" = "BF16"): TensorData => {
    const n = shape.reduce((a, b) => a * b, 1);
    return { name, dtype, shape, data: fromFloat(rng.normals(n, 0.5), dtype) };
  };
  return [
    t("model.embed_tokens.weight", [5, 6]),
    t("model.layers.0.self_attn.q_proj.weight", [6, 6]),
    t("model.layers.0.mlp.down_proj.weight", [6, 7]),
    t("model.norm.weight", [6], "F32"),
    t("lm_head.weight", [5, 6]),
  ];
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "qlorad-ck-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function rejectsWith(kind: string, ...patterns: (string | RegExp)[]) {
  return (e: unknown) => {
    assert.ok(e instanceof QloradError, String(e));
    assert.equal(e.kind, kind, e.message);
    for (const p of patterns) {
      if (typeof p === "string") assert.ok(e.message.includes(p), `${e.message} lacks ${p}`);
      else assert.match(e.message, p);
    }
    return true;
  };
}

Deno.test("single-file checkpoint: config, names, bytes, other files", async () => {
  await withDir(async (dir) => {
    const ts = tensors(new Rng(31));
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(CONFIG));
    await writeSafetensors(join(dir, "model.safetensors"), ts, { format: "pt" });
    for (
      const f of [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "tokenizer.model",
      ]
    ) {
      await Deno.writeTextFile(join(dir, f), "{}");
    }
    // Not copied along: weights in other formats, unfinished files, hidden files, datasets.
    for (
      const f of ["pytorch_model.bin", "x.safetensors.partial-abc", ".DS_Store", "train.jsonl"]
    ) {
      await Deno.writeTextFile(join(dir, f), "x");
    }
    await Deno.mkdir(join(dir, "subdir"));
    const ck = await HfCheckpoint.open(dir);
    try {
      assert.deepEqual(ck.config, CONFIG);
      assert.equal(ck.sharded, false);
      assert.deepEqual(ck.weightFiles, ["model.safetensors"]);
      assert.deepEqual(ck.names(), ts.map((t) => t.name));
      for (const t of ts) {
        assert.deepEqual(await ck.readBytes(t.name), t.data);
        const info = ck.info(t.name);
        assert.equal(info.file, "model.safetensors");
        assert.deepEqual(info.shape, t.shape);
      }
      const norm = await ck.readFloat32("model.norm.weight");
      assert.deepEqual(new Uint8Array(norm.buffer), ts[3].data);
      assert.deepEqual(ck.otherFiles(), [
        "generation_config.json",
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
      ]);
      assert.throws(() => ck.info("nope"), rejectsWith("not_found", '"nope"'));
    } finally {
      ck.close();
    }
  });
});

async function writeSharded(dir: string, ts: TensorData[]): Promise<Record<string, string>> {
  const a = "model-00001-of-00002.safetensors";
  const b = "model-00002-of-00002.safetensors";
  await writeSafetensors(join(dir, a), ts.slice(0, 2), { format: "pt" });
  await writeSafetensors(join(dir, b), ts.slice(2), { format: "pt" });
  const map: Record<string, string> = {};
  ts.forEach((t, i) => (map[t.name] = i < 2 ? a : b));
  return map;
}

Deno.test("sharded checkpoint: index round trip", async () => {
  await withDir(async (dir) => {
    const ts = tensors(new Rng(32));
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(CONFIG));
    const map = await writeSharded(dir, ts);
    await Deno.writeTextFile(
      join(dir, "model.safetensors.index.json"),
      JSON.stringify({ metadata: { total_size: 123 }, weight_map: map }),
    );
    const ck = await HfCheckpoint.open(dir);
    try {
      assert.equal(ck.sharded, true);
      assert.deepEqual(ck.indexMetadata, { total_size: 123 });
      assert.deepEqual(ck.weightFiles, [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
      ]);
      assert.deepEqual(new Set(ck.names()), new Set(ts.map((t) => t.name)));
      for (const t of ts) {
        assert.equal(ck.info(t.name).file, map[t.name]);
        assert.deepEqual(await ck.readBytes(t.name), t.data);
      }
      assert.deepEqual(ck.otherFiles(), []);
    } finally {
      ck.close();
    }
  });
});

Deno.test("sharded checkpoint: missing shard, wrong shard, unsafe shard name", async (t) => {
  await withDir(async (dir) => {
    const ts = tensors(new Rng(33));
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(CONFIG));
    const map = await writeSharded(dir, ts);
    const indexPath = join(dir, "model.safetensors.index.json");
    const withMap = (m: Record<string, string>) =>
      Deno.writeTextFile(indexPath, JSON.stringify({ metadata: {}, weight_map: m }));

    await t.step("missing shard", async () => {
      await withMap({ ...map, "extra.weight": "model-00003-of-00003.safetensors" });
      await assert.rejects(
        HfCheckpoint.open(dir),
        rejectsWith("not_found", indexPath, '"model-00003-of-00003.safetensors"', '"extra.weight"'),
      );
    });
    await t.step("tensor not in its shard", async () => {
      await withMap({ ...map, "lm_head.weight": "model-00001-of-00002.safetensors" });
      await assert.rejects(
        HfCheckpoint.open(dir),
        rejectsWith("invalid_argument", indexPath, '"lm_head.weight"', "does not contain it"),
      );
    });
    await t.step("shard outside the folder", async () => {
      await withMap({ ...map, "lm_head.weight": "../model-00002-of-00002.safetensors" });
      await assert.rejects(
        HfCheckpoint.open(dir),
        rejectsWith("invalid_argument", indexPath, "must be a file name in the same folder"),
      );
    });
    await t.step("weight_map missing", async () => {
      await Deno.writeTextFile(indexPath, "{}");
      await assert.rejects(HfCheckpoint.open(dir), rejectsWith("invalid_argument", '"weight_map"'));
    });
    await t.step("corrupt shard names the shard", async () => {
      await withMap(map);
      const shard = join(dir, "model-00002-of-00002.safetensors");
      const bytes = await Deno.readFile(shard);
      await Deno.writeFile(shard, bytes.subarray(0, bytes.length - 1));
      await assert.rejects(HfCheckpoint.open(dir), rejectsWith("invalid_argument", shard));
    });
  });
});

Deno.test("sharded checkpoint: names stream shard by shard, in each shard's header order", async () => {
  await withDir(async (dir) => {
    const ts = tensors(new Rng(34));
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(CONFIG));
    const map = await writeSharded(dir, ts);
    // The index lists tensors in reverse (sorted) order; reading follows the files instead.
    const reversed = Object.fromEntries(Object.entries(map).reverse());
    await Deno.writeTextFile(
      join(dir, "model.safetensors.index.json"),
      JSON.stringify({ weight_map: reversed }),
    );
    const ck = await HfCheckpoint.open(dir);
    try {
      assert.deepEqual(ck.names(), ts.map((t) => t.name));
    } finally {
      ck.close();
    }
  });
});

Deno.test("sharded checkpoint: a tensor in two shards, in no shard, unlisted, or listed twice", async (t) => {
  await withDir(async (dir) => {
    const ts = tensors(new Rng(35));
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(CONFIG));
    const map = await writeSharded(dir, ts);
    const a = "model-00001-of-00002.safetensors";
    const b = "model-00002-of-00002.safetensors";
    const indexPath = join(dir, "model.safetensors.index.json");
    const withMap = (m: Record<string, string>) =>
      Deno.writeTextFile(indexPath, JSON.stringify({ metadata: {}, weight_map: m }));

    await t.step("tensor in no shard", async () => {
      await withMap({ ...map, "model.layers.0.mlp.up_proj.weight": b });
      await assert.rejects(
        HfCheckpoint.open(dir),
        rejectsWith(
          "invalid_argument",
          indexPath,
          '"model.layers.0.mlp.up_proj.weight"',
          `"${b}"`,
          "no shard does",
        ),
      );
    });
    await t.step("tensor mapped to the other shard names where it is", async () => {
      await withMap({ ...map, "model.norm.weight": a });
      await assert.rejects(
        HfCheckpoint.open(dir),
        rejectsWith("invalid_argument", indexPath, '"model.norm.weight"', `it is in "${b}"`),
      );
    });
    await t.step("tensor in a shard but not in the index", async () => {
      const partial = { ...map };
      delete partial["lm_head.weight"];
      await withMap(partial);
      await assert.rejects(
        HfCheckpoint.open(dir),
        rejectsWith("invalid_argument", join(dir, b), '"lm_head.weight"', "not listed"),
      );
    });
    await t.step("tensor listed twice in the index", async () => {
      const entries = Object.entries(map).map(([k, v]) => `${JSON.stringify(k)}: "${v}"`);
      const text = `{"weight_map": {${entries.join(", ")}, "model.norm.weight": "${a}"}}`;
      await Deno.writeTextFile(indexPath, text);
      await assert.rejects(
        HfCheckpoint.open(dir),
        rejectsWith("invalid_argument", indexPath, '"model.norm.weight" is listed twice'),
      );
    });
    await t.step("tensor in two shards", async () => {
      // A third shard holds a second copy of a tensor of the first shard.
      const c = "model-00003-of-00003.safetensors";
      await writeSafetensors(join(dir, c), [ts[0]], { format: "pt" });
      await withMap({ ...map, "model.extra.weight": c });
      await assert.rejects(
        HfCheckpoint.open(dir),
        rejectsWith(
          "invalid_argument",
          dir,
          `"${ts[0].name}" is in two shards`,
          `"${a}"`,
          `"${c}"`,
        ),
      );
    });
  });
});

Deno.test("checkpoint folder errors name the file", async (t) => {
  await withDir(async (dir) => {
    await t.step("missing folder", async () => {
      await assert.rejects(HfCheckpoint.open(join(dir, "none")), rejectsWith("not_found", "none"));
    });
    await t.step("missing config.json", async () => {
      await assert.rejects(HfCheckpoint.open(dir), rejectsWith("not_found", "config.json"));
    });
    await t.step("bad config.json", async () => {
      await Deno.writeTextFile(join(dir, "config.json"), '{\n  "hidden_size": 8,\n  "x": }\n');
      await assert.rejects(
        HfCheckpoint.open(dir),
        rejectsWith("invalid_argument", "config.json", "line 3 column 8"),
      );
    });
    await t.step("config.json not an object", async () => {
      await Deno.writeTextFile(join(dir, "config.json"), "[1]");
      await assert.rejects(HfCheckpoint.open(dir), rejectsWith("invalid_argument", "config.json"));
    });
    await t.step("no weights", async () => {
      await Deno.writeTextFile(join(dir, "config.json"), "{}");
      await Deno.writeTextFile(join(dir, "pytorch_model.bin"), "x");
      await assert.rejects(
        HfCheckpoint.open(dir),
        rejectsWith("not_found", "model.safetensors", "only PyTorch .bin"),
      );
    });
  });
});

Deno.test("parseJsonText: line and column of the fault, hand-counted", () => {
  const cases: [string, number, number][] = [
    ['{"a": }', 1, 7],
    ['{"a": 1,}', 1, 9],
    ['{\n  "a" 1}', 2, 7],
    ['{"a": tru}', 1, 10],
    ['{"a":\n 1\n "b": 2}', 3, 2],
    ["{'a':1}", 1, 2],
    ["[1 2]", 1, 4],
    ['{"a": 01}', 1, 8],
    ['{"a": "x\ny"}', 1, 9], // raw newline in a string
    ['{"a": "\\q"}', 1, 9],
    ["{} x", 1, 4],
  ];
  for (const [text, line, column] of cases) {
    assert.throws(
      () => parseJsonText(text, "f.json"),
      rejectsWith("invalid_argument", `f.json: invalid JSON at line ${line} column ${column}`),
      text,
    );
  }
  assert.throws(() => parseJsonText('{"a": "x', "f.json"), /f\.json: invalid JSON at end of input/);
  assert.throws(() => parseJsonText("", "f.json"), /at end of input/);
  assert.deepEqual(lineColumn("ab\ncd", 4), { line: 2, column: 2 });
});

Deno.test("jsonErrorOffset accepts everything JSON.stringify writes", () => {
  const rng = new Rng(34);
  const value = (depth: number): unknown => {
    const k = rng.int(depth > 3 ? 4 : 6);
    if (k === 0) return rng.normal() * 10 ** rng.int(30);
    if (k === 1) {
      return String.fromCharCode(...Array.from({ length: rng.int(8) }, () => rng.int(0x3000)));
    }
    if (k === 2) return [null, true, false][rng.int(3)];
    if (k === 3) return -rng.int(1000);
    if (k === 4) return Array.from({ length: rng.int(4) }, () => value(depth + 1));
    return Object.fromEntries(
      Array.from({ length: rng.int(4) }, (_, i) => [`k${i}"\\`, value(depth + 1)]),
    );
  };
  for (let i = 0; i < 300; i++) {
    const text = JSON.stringify(value(0), null, rng.int(2) ? 2 : undefined);
    assert.equal(jsonErrorOffset(text), -1, text);
  }
});

Deno.test("writeFileAtomic: content in place, no partial left", async () => {
  await withDir(async (dir) => {
    const p = join(dir, "a.json");
    await writeFileAtomic(p, '{"x":1}');
    await writeFileAtomic(p, new Uint8Array([1, 2, 3]));
    assert.deepEqual(await Deno.readFile(p), new Uint8Array([1, 2, 3]));
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["a.json"]);
    await assert.rejects(writeFileAtomic(join(dir, "no", "such", "dir.json"), "x"));
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["a.json"]);
  });
});

Deno.test("OutputDir: abort leaves nothing, commit replaces only with overwrite", async () => {
  await withDir(async (dir) => {
    const final = join(dir, "out");
    const a = await OutputDir.create(final);
    assert.ok(a.path.startsWith(`${final}.partial-`));
    await Deno.writeTextFile(a.file("x.txt"), "aborted");
    await a.abort();
    assert.deepEqual([...Deno.readDirSync(dir)], []);

    const b = await OutputDir.create(final);
    await Deno.writeTextFile(b.file("x.txt"), "first");
    await b.commit();
    assert.equal(await Deno.readTextFile(join(final, "x.txt")), "first");

    await assert.rejects(OutputDir.create(final), rejectsWith("failed_precondition", final));

    const c = await OutputDir.create(final, { overwrite: true });
    await Deno.writeTextFile(c.file("y.txt"), "second");
    assert.equal(await Deno.readTextFile(join(final, "x.txt")), "first", "old kept until commit");
    await c.commit();
    assert.deepEqual([...Deno.readDirSync(final)].map((e) => e.name), ["y.txt"]);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["out"]);
    await c.abort(); // after commit: no-op
    assert.equal(await Deno.readTextFile(join(final, "y.txt")), "second");

    // Someone else created the final folder meanwhile: commit without overwrite refuses.
    const d = await OutputDir.create(join(dir, "late"));
    await Deno.mkdir(join(dir, "late"));
    await assert.rejects(d.commit(), rejectsWith("failed_precondition", "late"));
    await d.abort();
  });
});

Deno.test("a process that dies mid-write leaves nothing under the final names", async () => {
  await withDir(async (dir) => {
    const src = new URL("../../src/io/", import.meta.url).href;
    const script = `
      import { OutputDir } from "${src}atomic.ts";
      import { SafetensorsWriter } from "${src}safetensors.ts";
      const out = await OutputDir.create(${JSON.stringify(join(dir, "model"))});
      await Deno.writeTextFile(out.file("config.json"), "{}");
      const w = await SafetensorsWriter.create(${JSON.stringify(join(dir, "w.safetensors"))},
        [{ name: "a", dtype: "U8", shape: [4] }, { name: "b", dtype: "U8", shape: [4] }]);
      await w.write("a", new Uint8Array(4));
      Deno.exit(3); // crash: neither committed nor aborted
    `;
    const child = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-check", script],
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(child.code, 3, new TextDecoder().decode(child.stderr));
    const names = [...Deno.readDirSync(dir)].map((e) => e.name);
    assert.ok(!names.includes("model") && !names.includes("w.safetensors"), names.join(" "));
    assert.ok(names.every((n) => n.includes(".partial-")), names.join(" "));
    assert.equal(names.length, 2);
  });
});
