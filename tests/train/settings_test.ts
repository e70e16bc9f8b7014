/**
 * src/train/settings.ts on its own: unset takes the documented default (values stated by the
 * proto's comments, written out here), text is read as a number only when it is one, and each
 * error is a SettingError on the name the caller gave.
 */
import assert from "node:assert/strict";
import {
  evaluateSettings,
  hyperparameterSettings,
  loraSettings,
  quantizeSettings,
  SettingError,
} from "../../src/train/settings.ts";
import { generateSettings } from "../../src/train/generate_settings.ts";

const asIs = (k: string) => `<${k}>`;

Deno.test("settings: unset means the proto's documented defaults", () => {
  const hp = hyperparameterSettings({}, asIs);
  assert.deepEqual(
    [hp.learningRate, hp.lrScheduler, hp.maxSteps, hp.epochs, hp.microBatchSize, hp.maxSeqLen],
    [2e-4, "constant", 0, 1, 1, 512],
  );
  assert.deepEqual([hp.maxGradNorm, hp.seed, hp.gradientCheckpointing], [0.3, 42, true]);
  const lora = loraSettings({}, asIs);
  assert.deepEqual([lora.r, lora.alpha, lora.dropout, lora.targets.length], [8, 16, 0.05, 7]);
  assert.deepEqual(evaluateSettings({}, asIs), {
    maxSeqLen: 512,
    batchSize: 1,
    samplePrompts: [],
    maxNewTokens: 64,
  });
  assert.deepEqual(quantizeSettings({}, asIs), {
    quantType: "nf4",
    blocksize: 64,
    doubleQuant: true,
    skipModules: ["lm_head"],
  });
});

Deno.test("settings: text is a number only when it reads as one", () => {
  const r = (v: unknown) => loraSettings({ r: v }, asIs).r;
  assert.equal(r("16"), 16);
  assert.equal(r("1.6e1"), 16);
  assert.equal(r(16), 16);
  const lr = (v: unknown) => hyperparameterSettings({ learningRate: v }, asIs).learningRate;
  assert.equal(lr("5e-3"), 5e-3);
  assert.equal(lr(".5"), 0.5);
  for (const bad of ["0x10", "", " ", "16abc", "Infinity", "NaN", "1,5", true]) {
    assert.throws(
      () => r(bad),
      (e) => e instanceof SettingError && e.field === "<r>" && e.kind === "invalid_argument",
      JSON.stringify(bad),
    );
  }
});

Deno.test("settings: ranges and cross-checks name the caller's fields", () => {
  const refused = (fn: () => unknown, message: RegExp) =>
    assert.throws(fn, (e) => e instanceof SettingError && message.test(e.message));
  refused(() => loraSettings({ r: 0 }, asIs), /^<r>: 0 is outside 1\.\.1024$/);
  refused(() => loraSettings({ r: 8.5 }, asIs), /^<r>: 8\.5 is not a whole number \(1\.\.1024\)$/);
  refused(() => loraSettings({ alpha: 0 }, asIs), /^<alpha>: 0 is outside \(0, 1000000\]$/);
  refused(() => loraSettings({ targets: ["q_proj", "nope"] }, asIs), /^<targets>: unknown/);
  refused(
    () => hyperparameterSettings({ warmupSteps: 7, maxSteps: 5 }, asIs),
    /^<warmupSteps> 7 exceeds <maxSteps> 5$/,
  );
  refused(() => hyperparameterSettings({ lrScheduler: "step" }, asIs), /^<lrScheduler>: step/);
  refused(() => evaluateSettings({ samplePrompts: [""] }, asIs), /^<samplePrompts>: each/);
  refused(() => quantizeSettings({ blocksize: 96 }, asIs), /^<blocksize>: 96 is not allowed/);
  refused(() => quantizeSettings({ quantType: "int4" }, asIs), /^<quantType> "int4": unsupported/);
  // An explicit empty list is kept (the command line's "--skip-modules ''"): nothing skipped.
  assert.deepEqual(quantizeSettings({ skipModules: [] }, asIs).skipModules, []);
});

Deno.test("settings: a Generate job's flag and stop strings name the caller's fields", () => {
  const refused = (fn: () => unknown, message: RegExp) =>
    assert.throws(fn, (e) => e instanceof SettingError && message.test(e.message));
  assert.equal(generateSettings({}, asIs).ignoreEos, false);
  assert.equal(generateSettings({ ignoreEos: true }, asIs).ignoreEos, true);
  refused(() => generateSettings({ ignoreEos: "yes" }, asIs), /^<ignoreEos>: "yes" is not true/);
  refused(() => generateSettings({ stop: "\n" }, asIs), /^<stop>: must be a list/);
  refused(() => generateSettings({ stop: [""] }, asIs), /^<stop>: each must be 1\.\.256/);
  // Whitespace is a stop string like any other: "\n" ends a line.
  assert.deepEqual(generateSettings({ stop: ["\n"] }, asIs).stop, ["\n"]);
});
