/**
 * The JobStore contract (job_store_contract.ts) run on the local store, the default one, whose
 * data is a folder; its crash is a process that stopped mid-write: the store is never closed, a
 * log line was cut short and a temporary record file was left behind.
 */
import * as path from "node:path";
import { LocalJobStore } from "../../src/service/jobs.ts";
import type { JobStore } from "../../src/service/jobs.ts";
import { silentLogger } from "../../src/service/status.ts";
import { jobStoreContract } from "./job_store_contract.ts";

jobStoreContract({
  name: "local",
  async fresh() {
    const dir = await Deno.makeTempDir({ prefix: "qlorad-store-" });
    const opened: JobStore[] = [await LocalJobStore.open(dir, silentLogger)];
    return {
      store: opened[0],
      async crashAndReopen() {
        for await (const item of Deno.readDir(dir)) {
          if (!item.name.endsWith(".json")) continue;
          const record = JSON.parse(await Deno.readTextFile(path.join(dir, item.name)));
          if (record.state === "QUEUED" || record.state === "RUNNING") {
            const log = path.join(dir, `${record.job_id}.events.jsonl`);
            await Deno.writeTextFile(log, '{"job_id":"torn","seq', { append: true });
          }
        }
        await Deno.writeTextFile(path.join(dir, "x.json.partial-0a1b2c"), '{"job_id":');
        const store = await LocalJobStore.open(dir, silentLogger);
        opened.push(store);
        return store;
      },
      async dispose() {
        for (const s of opened) await s.close();
        await Deno.remove(dir, { recursive: true });
      },
    };
  },
});
