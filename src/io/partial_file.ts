/**
 * A file written under `<path>.partial-<random>` and renamed into place only once whole: what
 * the writers of big outputs (safetensors, GGUF) share, so that a crash or an abort never leaves
 * a half-written file under the final name (`io/sweep_partials.ts` clears what a crash leaves).
 * A write that fails removes the temporary file; one that fails for a full disk says so, naming
 * the final path.
 */
import { dirname } from "node:path";
import { QloradError } from "../util/errors.ts";
import { diskFullError, fsyncDir, isDiskFullError, partialPath } from "./atomic.ts";

export class PartialFile {
  #file: Deno.FsFile | undefined;
  #done = false;

  private constructor(readonly path: string, readonly tempPath: string, file: Deno.FsFile) {
    this.#file = file;
  }

  /** A new temporary sibling of `path`, open for writing (never an existing file). */
  static async create(path: string): Promise<PartialFile> {
    const tempPath = partialPath(path);
    const file = await Deno.open(tempPath, { write: true, createNew: true });
    return new PartialFile(path, tempPath, file);
  }

  /** Appends all of `bytes`. */
  async write(bytes: Uint8Array): Promise<void> {
    const file = this.#open();
    await this.#guard(async () => {
      let off = 0;
      while (off < bytes.byteLength) off += await file.write(bytes.subarray(off));
    });
  }

  /** fsyncs the file, renames it into place and fsyncs the folder (so the rename is durable). */
  async commit(): Promise<void> {
    const file = this.#open();
    await this.#guard(() => file.sync());
    file.close();
    this.#file = undefined;
    // Done only once renamed: a failed rename leaves abort() the temporary file to remove.
    await Deno.rename(this.tempPath, this.path);
    this.#done = true;
    await fsyncDir(dirname(this.path));
  }

  /** Drops the temporary file; nothing appears under the final name. No-op once committed. */
  async abort(): Promise<void> {
    if (this.#done) return;
    this.#file?.close();
    this.#file = undefined;
    try {
      await Deno.remove(this.tempPath);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }

  /** Refuses a write after commit or abort, naming the file. */
  checkOpen(): void {
    this.#open();
  }

  #open(): Deno.FsFile {
    if (!this.#file) {
      throw new QloradError(
        "failed_precondition",
        `${this.path}: writer is ${this.#done ? "finished" : "aborted"}`,
      );
    }
    return this.#file;
  }

  async #guard(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (e) {
      await this.abort();
      throw isDiskFullError(e) ? diskFullError(this.path, e) : e;
    }
  }
}
