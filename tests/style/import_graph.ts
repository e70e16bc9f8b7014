/**
 * The import graph of a source folder, as Deno itself resolves it (`deno info --json`): static,
 * dynamic, type-only and re-export imports alike, bare names through the import map. The layer
 * check (layer_check.ts) runs on it; reading the graph from Deno rather than from a hand-written
 * parser means an import the check misses is one Deno does not load either.
 */
import { join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

/** One import: `from` imports `to`, both repo-relative paths, or `to` a package (`npm:x`, `node:x`). */
export interface ImportEdge {
  from: string;
  to: string;
}

/** Every `.ts` file under `dir` (repo-relative paths, sorted). */
export async function sourceFiles(root: string, dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(join(root, d))) {
      const p = join(d, e.name);
      if (e.isDirectory) await walk(p);
      else if (e.isFile && e.name.endsWith(".ts")) out.push(p);
    }
  };
  await walk(dir);
  return out.sort();
}

/** `npm:@grpc/grpc-js@1.14.7` -> `npm:@grpc/grpc-js`; `node:path` stays. */
function packageId(resolved: string): string {
  const m = /^npm:\/?((?:@[^/@]+\/)?[^/@]+)/.exec(resolved);
  return m ? `npm:${m[1]}` : resolved;
}

/**
 * The imports made by `files` (repo-relative), resolved with `root`'s deno.json when it has one.
 * Only edges out of `files` are returned: what the imported files import is their own business.
 */
export async function importGraph(root: string, files: string[]): Promise<ImportEdge[]> {
  const absRoot = resolve(root);
  const tmp = await Deno.makeTempDir({ prefix: "import_graph_" });
  try {
    const entry = join(tmp, "all.ts");
    const lines = files.map((f) =>
      `import ${JSON.stringify(pathToFileURL(join(absRoot, f)).href)};`
    );
    await Deno.writeTextFile(entry, lines.join("\n") + "\n");
    const config = join(absRoot, "deno.json");
    const hasConfig = await Deno.stat(config).then(() => true, () => false);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", ...(hasConfig ? ["--config", config] : ["--no-config"]), entry],
      cwd: absRoot,
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    if (out.code !== 0) {
      throw new Error(`deno info failed: ${new TextDecoder().decode(out.stderr).slice(-2000)}`);
    }
    const info = JSON.parse(new TextDecoder().decode(out.stdout)) as DenoInfo;
    const wanted = new Set(files);
    const edges: ImportEdge[] = [];
    for (const m of info.modules) {
      if (!m.specifier.startsWith("file:")) continue;
      const from = relative(absRoot, fileURLToPath(m.specifier));
      if (!wanted.has(from)) continue;
      const seen = new Set<string>();
      for (const d of m.dependencies ?? []) {
        const target = d.code?.specifier ?? d.type?.specifier;
        if (target === undefined) {
          throw new Error(`${from}: deno info could not resolve import "${d.specifier}"`);
        }
        const to = target.startsWith("file:")
          ? relative(absRoot, fileURLToPath(target))
          : packageId(target);
        if (seen.has(to)) continue;
        seen.add(to);
        edges.push({ from, to });
      }
    }
    return edges;
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

/** The part of `deno info --json` read here. */
interface DenoInfo {
  modules: {
    specifier: string;
    dependencies?: {
      specifier: string;
      code?: { specifier: string };
      type?: { specifier: string };
    }[];
  }[];
}
