/**
 * The server's one GPU device, opened on first use by a job (so the server starts and answers
 * health without one) and shared by every job after. A failure to open is remembered and
 * reported as UNAVAILABLE; health turns NOT_SERVING while no device can be had.
 */
import { GpuContext } from "../gpu/context.ts";
import { kernelLadder } from "../kernels/ladder.ts";
import type { Logger } from "./status.ts";

export class GpuHolder {
  #ctx: Promise<GpuContext> | undefined;
  #failed = false;

  constructor(
    readonly logger: Logger,
    readonly onHealth: (serving: boolean) => void = () => {},
  ) {}

  /** The device; opens it on the first call. */
  get = (): Promise<GpuContext> => {
    if (!this.#ctx) {
      this.#ctx = GpuContext.open({ log: (line) => this.logger.info(line) }).then(
        async (ctx) => {
          // Choose each hot kernel's variant for this adapter now (timed once, cached on disk),
          // rather than inside the first training step.
          try {
            const choices = await kernelLadder.warm(ctx);
            this.logger.info(
              `kernels: ${choices.map((c) => `${c.kernel}=${c.variant}`).join(", ")}`,
            );
          } catch (err) {
            this.logger.warn(`kernel timing failed, using default variants: ${err}`);
          }
          this.#failed = false;
          this.onHealth(true);
          return ctx;
        },
        (err) => {
          this.#ctx = undefined; // try again on the next job
          this.#failed = true;
          this.onHealth(false);
          throw err;
        },
      );
    }
    return this.#ctx;
  };

  get failed(): boolean {
    return this.#failed;
  }

  async close(): Promise<void> {
    const pending = this.#ctx;
    this.#ctx = undefined;
    if (pending) {
      try {
        (await pending).destroy();
      } catch {
        // never opened
      }
    }
  }
}
