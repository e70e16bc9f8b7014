/**
 * A KV decoder whose allocation fails partway hands back every buffer it had made (its cache's
 * layers included): the server keeps running after such a job, so a leak would stay for good.
 * Host-only: a stand-in context whose createBuffer fails at the n-th call counts what is live.
 */
import assert from "node:assert/strict";
import type { GpuBuffer, GpuContext } from "../../src/gpu/context.ts";
import type { BaseModel } from "../../src/model/base_model.ts";
import { LoraLayout } from "../../src/model/lora.ts";
import { KvDecoder } from "../../src/train/decode.ts";
import { KvCache } from "../../src/train/kv_cache.ts";
import { TINY } from "../model/setup.ts";

/** A context that makes `failAt - 1` buffers and then fails; `live` counts those not destroyed. */
function failingContext(failAt: number) {
  const state = { made: 0, live: 0 };
  const ctx = {
    capabilities: { f16: false },
    createBuffer(): GpuBuffer {
      if (++state.made >= failAt) throw new Error("out of memory (stand-in)");
      state.live++;
      let destroyed = false;
      return {
        destroy() {
          assert.ok(!destroyed, "a buffer destroyed twice");
          destroyed = true;
          state.live--;
        },
      } as unknown as GpuBuffer;
    },
  } as unknown as GpuContext;
  return { ctx, state };
}

const model = { cfg: TINY } as unknown as BaseModel;
const lora = new LoraLayout(TINY, {
  r: 4,
  alpha: 8,
  dropout: 0,
  targets: ["q"],
  useRslora: false,
});

Deno.test("a decoder that fails to allocate leaves no buffer behind", () => {
  // Count what a whole decoder makes, then fail at every one of those calls in turn.
  const whole = failingContext(Infinity);
  new KvDecoder(whole.ctx, model, lora, {} as GpuBuffer, { capacity: 9, chunk: 4 }).destroy();
  assert.equal(whole.state.live, 0);
  const total = whole.state.made;
  assert.ok(total > 2 * TINY.layers, `${total} buffers: the cache's and the decoder's own`);
  for (let failAt = 1; failAt <= total; failAt++) {
    const { ctx, state } = failingContext(failAt);
    assert.throws(
      () => new KvDecoder(ctx, model, lora, {} as GpuBuffer, { capacity: 9, chunk: 4 }),
      /stand-in/,
    );
    assert.equal(state.live, 0, `failing at buffer ${failAt}: ${state.live} left`);
  }
});

Deno.test("a KV cache that fails at a later layer gives back the earlier ones", () => {
  const { ctx, state } = failingContext(2 * TINY.layers);
  assert.throws(() => new KvCache(ctx, TINY, 9, "f32"), /stand-in/);
  assert.equal(state.live, 0);
});
