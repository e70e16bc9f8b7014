/**
 * Runs the whole test suite and ends with one plain summary line
 * ("tests: N passed, N failed") that CI reads; exit status is deno test's.
 */
const args = Deno.args.length > 0 ? Deno.args : ["tests/"];
const child = new Deno.Command(Deno.execPath(), {
  args: ["test", "-A", "--no-check=remote", ...args],
  stdout: "piped",
  stderr: "inherit",
  env: { NO_COLOR: "1" },
}).spawn();

let tail = "";
const decoder = new TextDecoder();
for await (const chunk of child.stdout) {
  await Deno.stdout.write(chunk);
  tail = (tail + decoder.decode(chunk, { stream: true })).slice(-4096);
}
const status = await child.status;
const summary = [...tail.matchAll(/(\d+) passed.*?\| (\d+) failed/g)].at(-1);
if (summary) console.log(`\ntests: ${summary[1]} passed, ${summary[2]} failed`);
Deno.exit(status.code);
