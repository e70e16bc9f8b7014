/**
 * What every `qlorad` command shares: one argument parser (node:util parseArgs, strict, with
 * `--help`), one error-to-exit-code rule, and the flag helpers for settings that are the command
 * line's own (ports, timeouts). Exit codes: 0 done, 2 a usage error (a bad or missing flag, a
 * setting out of range: printed with the command's usage), 1 a failure, 130 interrupted.
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { CancelledError, QloradError } from "../util/errors.ts";
import { SettingError } from "../train/settings.ts";

/** Where a command writes: stdout and stderr by default, a capture in tests. */
export interface CommandIo {
  print(line: string): void;
  printError(line: string): void;
}

export const CONSOLE_IO: CommandIo = {
  print: (line) => console.log(line),
  printError: (line) => console.error(line),
};

export interface Command {
  name: string;
  /** The usage block: synopsis, then what it does and its defaults, indented. */
  usage: string;
  /** Runs the command on its arguments; resolves to the exit code. */
  run(args: string[], io: CommandIo): Promise<number>;
}

/** A bad command line: exit 2 with the command's usage. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

export function usageError(message: string): never {
  throw new UsageError(message);
}

/** `--help`: print the usage, exit 0. */
class HelpRequested extends Error {}

/** A usage error of parseArgs itself (unknown flag, missing value). */
function isParseArgsError(err: unknown): err is TypeError {
  return err instanceof TypeError && "code" in err &&
    String(err.code).startsWith("ERR_PARSE_ARGS");
}

/**
 * The flags of `args` as `options` declares them (no positionals; `--help` / `-h` added). Throws
 * UsageError for an unknown flag or a missing value.
 */
export function parseFlags<const O extends ParseArgsOptionsConfig>(
  args: string[],
  options: O,
): FlagValues<O> {
  let values: Record<string, unknown>;
  try {
    values = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: { ...options, help: { type: "boolean", short: "h" } },
    }).values;
  } catch (err) {
    if (isParseArgsError(err)) throw new UsageError(err.message);
    throw err;
  }
  const { help, ...flags } = values;
  if (help) throw new HelpRequested();
  return flags as FlagValues<O>;
}

/** The values parseArgs gives for `options`. */
type FlagValues<O extends ParseArgsOptionsConfig> = ReturnType<
  typeof parseArgs<{ args: string[]; strict: true; allowPositionals: false; options: O }>
>["values"];

/**
 * Runs `command`, mapping what it throws to an exit code and a message: usage errors and
 * settings out of range exit 2 (with the usage), `--help` prints the usage and exits 0, an
 * interrupt exits 130, anything else is a failure (1).
 */
export async function runCommand(
  command: Command,
  args: string[],
  io: CommandIo = CONSOLE_IO,
): Promise<number> {
  try {
    return await command.run(args, io);
  } catch (err) {
    return exitCodeOf(err, `qlorad ${command.name}`, `usage:\n${command.usage}`, io);
  }
}

/** The exit code for an error thrown by a command, its message printed on `io`. */
export function exitCodeOf(err: unknown, who: string, usage: string, io: CommandIo): number {
  if (err instanceof HelpRequested) {
    io.print(usage);
    return 0;
  }
  if (err instanceof UsageError || err instanceof SettingError) {
    io.printError(`${who}: ${err.message}\n\n${usage}`);
    return 2;
  }
  if (err instanceof CancelledError) {
    io.printError(`${who}: cancelled`);
    return 130;
  }
  if (err instanceof QloradError) {
    io.printError(`${who}: ${err.message}`);
    return 1;
  }
  io.printError(`${who}: ${err instanceof Error ? err.message : String(err)}`);
  // Not a system error (ENOENT and the like): a bug, whose stack is worth having.
  if (err instanceof Error && !("code" in err) && err.stack) io.printError(err.stack);
  return 1;
}

/** A whole number flag in [min, max], `fallback` when absent; a UsageError naming the flag. */
export function integerFlag(
  value: string | undefined,
  flag: string,
  fallback: number,
  min = 0,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > max) {
    usageError(`${flag} must be a whole number in ${min}..${max}, not ${JSON.stringify(value)}`);
  }
  return n;
}

const SIGNALS: Deno.Signal[] = ["SIGINT", "SIGTERM"];

/** Runs `fn` with a signal that SIGINT/SIGTERM abort (jobs stop at their next safe point). */
export async function interruptible<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const abort = new AbortController();
  const onSignal = () => abort.abort(new CancelledError());
  for (const s of SIGNALS) Deno.addSignalListener(s, onSignal);
  try {
    return await fn(abort.signal);
  } finally {
    for (const s of SIGNALS) Deno.removeSignalListener(s, onSignal);
  }
}

/** SIGINT and SIGTERM, the signals that stop a command. */
export const STOP_SIGNALS: readonly Deno.Signal[] = SIGNALS;
