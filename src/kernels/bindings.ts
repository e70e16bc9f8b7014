/**
 * Shared binding helpers for kernel wrappers: a binding's parts, and per-context scratch (the
 * argument checks live in shape_checks.ts).
 */
import { type Binding, GpuBuffer, type GpuContext } from "../gpu/context.ts";

/** A binding as buffer, byte offset and byte size (a whole buffer is offset 0). */
export function bindingParts(b: Binding): { buffer: GpuBuffer; offset: number; size: number } {
  return b instanceof GpuBuffer ? { buffer: b, offset: 0, size: b.size } : b;
}

const scratchByContext = new WeakMap<GpuContext, Map<string, GpuBuffer>>();

/**
 * A per-context scratch buffer named `label`, of at least `bytes`. A smaller one is replaced, not
 * destroyed: dispatches already recorded may still use it, and Dawn frees it once they are done.
 */
export function sharedScratch(ctx: GpuContext, label: string, bytes: number): GpuBuffer {
  let byLabel = scratchByContext.get(ctx);
  if (!byLabel) scratchByContext.set(ctx, byLabel = new Map());
  let buf = byLabel.get(label);
  if (!buf || buf.size < bytes) {
    if (buf) ctx.memory.remove(buf.category, buf.buffer.size);
    buf = ctx.createBuffer({ label, category: "scratch", size: bytes });
    byLabel.set(label, buf);
  }
  return buf;
}
