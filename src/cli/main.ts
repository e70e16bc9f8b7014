/**
 * The qlorad command line: `qlorad COMMAND [FLAGS]`, each command in its own file of src/cli/,
 * all parsed by command.ts. `qlorad --help` lists every command, `qlorad COMMAND --help` one.
 * Exit codes: 0 done, 2 a usage error (printed with the usage), 1 a failure, 130 interrupted.
 */
import { type Command, CONSOLE_IO, exitCodeOf, runCommand, UsageError } from "./command.ts";
import { SERVE } from "./serve.ts";
import { QUANTIZE } from "./quantize.ts";
import { ESTIMATE } from "./estimate.ts";
import { EXPORT } from "./export.ts";
import { EVAL, TRAIN } from "./local_jobs.ts";
import { GENERATE } from "./generate.ts";

export const COMMANDS: readonly Command[] = [
  SERVE,
  QUANTIZE,
  ESTIMATE,
  EXPORT,
  TRAIN,
  EVAL,
  GENERATE,
];

export const USAGE = `usage:\n${COMMANDS.map((c) => c.usage).join("\n")}\n
Run "qlorad COMMAND --help" for one command.`;

const HELP = ["help", "--help", "-h"];

/** Runs the CLI; resolves to the exit code (serve resolves when the server has stopped). */
export function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  const command = COMMANDS.find((c) => c.name === name);
  if (command) return runCommand(command, rest);
  if (HELP.includes(name)) {
    const topic = COMMANDS.find((c) => c.name === rest[0]);
    CONSOLE_IO.print(topic ? `usage:\n${topic.usage}` : USAGE);
    return Promise.resolve(rest.length === 0 || topic ? 0 : 2);
  }
  const err = new UsageError(
    name === undefined ? "no command given" : `unknown command ${JSON.stringify(name)}`,
  );
  return Promise.resolve(exitCodeOf(err, "qlorad", USAGE, CONSOLE_IO));
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
