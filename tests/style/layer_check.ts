/**
 * Checks an import graph against a layer rule: an ordered list of tiers, lowest first, each tier
 * one or more named layers (peers) owning path prefixes. A file may import its own layer, its
 * peers and anything below; an import upwards is reported as `file -> file` with both layers.
 * Packages may be limited to a tier and above (gRPC only from the service up), and cycles between
 * layers (peers importing each other, or a wrong-way import closing a loop) are reported too.
 * Generic on purpose, so that tests can run it on a small made-up graph as well as on src/.
 */
import type { ImportEdge } from "./import_graph.ts";

export interface Layer {
  name: string;
  /** Folder prefixes ("src/io/") or single files ("src/cli.ts"); the longest match wins. */
  paths: string[];
}

export interface LayerRule {
  /** Lowest tier first. */
  tiers: Layer[][];
  /** Package prefix ("npm:@grpc/") -> the lowest layer allowed to import it. */
  packages: Record<string, string>;
}

export interface LayerReport {
  /** `a.ts (kernels) -> b.ts (quant): kernels is below quant`, one line per import. */
  wrongWay: string[];
  /** Imports of a package below the tier it is limited to. */
  packages: string[];
  /** Files that no layer owns, and imports of files outside every layer. */
  unplaced: string[];
  /** Each cycle between layers, with one import per hop. */
  cycles: string[];
}

interface Placed {
  layer: string;
  tier: number;
}

/** The layer owning `file`: the longest matching prefix (a file path matches only itself). */
export function layerOf(rule: LayerRule, file: string): Placed | undefined {
  let best: (Placed & { len: number }) | undefined;
  rule.tiers.forEach((tier, t) => {
    for (const layer of tier) {
      for (const p of layer.paths) {
        const hit = p.endsWith("/") ? file.startsWith(p) : file === p;
        if (hit && (!best || p.length > best.len)) {
          best = { layer: layer.name, tier: t, len: p.length };
        }
      }
    }
  });
  return best && { layer: best.layer, tier: best.tier };
}

/** The rule in words, top tier first: `service -> train, quantize job -> model -> ...`. */
export function describeLayers(rule: LayerRule): string {
  return rule.tiers.map((tier) => tier.map((l) => l.name).join(", ")).reverse().join(" -> ");
}

function tierOf(rule: LayerRule, layer: string): number {
  const t = rule.tiers.findIndex((tier) => tier.some((l) => l.name === layer));
  if (t < 0) throw new Error(`packages: no layer named ${layer}`);
  return t;
}

/** Checks `edges` (imports out of `files`) against `rule`. */
export function checkLayers(rule: LayerRule, files: string[], edges: ImportEdge[]): LayerReport {
  const report: LayerReport = { wrongWay: [], packages: [], unplaced: [], cycles: [] };
  for (const f of files) {
    if (!layerOf(rule, f)) report.unplaced.push(`${f}: no layer owns this file`);
  }
  // Layer graph for the cycle search: layer -> layer -> one example import.
  const between = new Map<string, Map<string, string>>();
  for (const { from, to } of edges) {
    const a = layerOf(rule, from);
    if (!a) continue; // reported above
    if (/^(npm|node|jsr|https?):/.test(to)) {
      for (const [prefix, lowest] of Object.entries(rule.packages)) {
        if (to.startsWith(prefix) && a.tier < tierOf(rule, lowest)) {
          report.packages.push(`${from} (${a.layer}) -> ${to}: only ${lowest} and above may`);
        }
      }
      continue;
    }
    const b = layerOf(rule, to);
    if (!b) {
      report.unplaced.push(`${from} (${a.layer}) -> ${to}: imports a file outside every layer`);
      continue;
    }
    if (a.tier < b.tier) {
      report.wrongWay.push(
        `${from} (${a.layer}) -> ${to} (${b.layer}): ${a.layer} is below ${b.layer}`,
      );
    }
    if (a.layer !== b.layer) {
      const out = between.get(a.layer) ?? new Map<string, string>();
      if (!out.has(b.layer)) out.set(b.layer, `${from} -> ${to}`);
      between.set(a.layer, out);
    }
  }
  for (const scc of stronglyConnected(between)) {
    report.cycles.push(describeCycle(scc, between));
  }
  return report;
}

/** All problems of a report, one per line (empty when the graph keeps the rule). */
export function reportLines(r: LayerReport): string[] {
  return [...r.wrongWay, ...r.packages, ...r.unplaced, ...r.cycles];
}

/** Tarjan's algorithm: the components of more than one layer, each sorted, in sorted order. */
function stronglyConnected(g: Map<string, Map<string, string>>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string) => {
    index.set(v, index.size);
    low.set(v, index.get(v)!);
    stack.push(v);
    onStack.add(v);
    for (const w of [...(g.get(v)?.keys() ?? [])].sort()) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1) out.push(comp.sort());
    }
  };
  for (const v of [...g.keys()].sort()) if (!index.has(v)) visit(v);
  return out.sort((a, b) => (a[0] < b[0] ? -1 : 1));
}

/** One loop through a component, from its first layer back to it, with an import per hop. */
function describeCycle(scc: string[], g: Map<string, Map<string, string>>): string {
  const inScc = new Set(scc);
  // Breadth-first from the first layer to find the shortest way back to it.
  const start = scc[0];
  const prev = new Map<string, string>();
  const queue = [start];
  let last: string | undefined;
  while (queue.length && last === undefined) {
    const v = queue.shift()!;
    for (const w of [...(g.get(v)?.keys() ?? [])].sort()) {
      if (!inScc.has(w)) continue;
      if (w === start) {
        last = v;
        break;
      }
      if (!prev.has(w)) {
        prev.set(w, v);
        queue.push(w);
      }
    }
  }
  const path = [start];
  for (let v = last!; v !== start; v = prev.get(v)!) path.splice(1, 0, v);
  path.push(start);
  const hops = path.slice(1).map((to, i) => `  ${g.get(path[i])!.get(to)}`);
  return `cycle between layers ${path.join(" -> ")}:\n${hops.join("\n")}`;
}
