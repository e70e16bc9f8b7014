/**
 * Writes the TypeScript types of proto/qlorad/v1/qlorad.proto's messages to src/service/proto/,
 * with proto-loader-gen-types from the @grpc/proto-loader version deno.json pins, and with the
 * options the server loads the proto with (PROTO_LOADER_OPTIONS), so the types say what a handler
 * really receives. tests/service/proto_types_test.ts checks that the committed files are current.
 *
 *   deno task gen-proto-types [--out DIR]
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { PROTO_LOADER_OPTIONS } from "../src/service/server.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
export const PROTO_TYPES_DIR = "src/service/proto";

/** The pinned generator, `npm:@grpc/proto-loader@X.Y.Z`, as deno.json's import map names it. */
async function generator(): Promise<string> {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`));
  const spec = config.imports?.["@grpc/proto-loader"];
  if (typeof spec !== "string" || !/^npm:@grpc\/proto-loader@\d+\.\d+\.\d+$/.test(spec)) {
    throw new Error(`deno.json: imports["@grpc/proto-loader"] must pin a version, not ${spec}`);
  }
  return `${spec}/proto-loader-gen-types`;
}

/** Generates into `outDir` (replaced; a relative path is from the repository root). */
export async function generateProtoTypes(outDir: string): Promise<void> {
  const out = resolve(ROOT, outDir);
  const o = PROTO_LOADER_OPTIONS;
  const flags = [
    ...(o.keepCase ? ["--keepCase"] : []),
    `--longs=${(o.longs as { name: string }).name}`,
    `--enums=${(o.enums as { name: string }).name}`,
    ...(o.defaults ? ["--defaults"] : []),
    ...(o.oneofs ? ["--oneofs"] : []),
    "--importFileExtension=.ts",
  ];
  await Deno.remove(out, { recursive: true }).catch(() => {});
  const r = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--frozen",
      await generator(),
      ...flags,
      "-I",
      "proto",
      "-O",
      out,
      "qlorad/v1/qlorad.proto",
    ],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!r.success) {
    throw new Error(`proto-loader-gen-types failed: ${new TextDecoder().decode(r.stderr)}`);
  }
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { out: { type: "string" } } });
  await generateProtoTypes(values.out ?? PROTO_TYPES_DIR);
}
