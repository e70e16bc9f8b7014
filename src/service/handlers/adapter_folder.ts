/**
 * The optional `adapter_path` of a job request (Evaluate, Generate, Export): a folder inside the
 * data directory, with no link leading out, holding PEFT's two files. Checked before a job exists,
 * so a wrong path is INVALID_ARGUMENT / NOT_FOUND naming the field, not a FAILED job.
 */
import { join } from "node:path";
import { exists } from "../../io/atomic.ts";
import { notFound } from "../../util/errors.ts";
import { resolveDataPath } from "../paths.ts";
import { checkFolderLinks } from "../confine.ts";

export const ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors"] as const;

/** The adapter folder's absolute path, or undefined when the request names none. */
export async function resolveAdapterFolder(
  dataDir: string,
  adapterPath: string | undefined,
): Promise<string | undefined> {
  if (!adapterPath) return undefined;
  const label = `adapter_path ${JSON.stringify(adapterPath)}`;
  const dir = await resolveDataPath(dataDir, adapterPath, "adapter_path", { mustExist: true });
  await checkFolderLinks(dataDir, dir, label);
  for (const f of ADAPTER_FILES) {
    if (!(await exists(join(dir, f)))) throw notFound(`${label}: ${f} not found`);
  }
  return dir;
}
