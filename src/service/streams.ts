/**
 * Limits on open job event streams (Quantize, Train, Evaluate, WatchJob): so many per connection
 * and so many in all. Each open stream costs a little memory even with flow control (a few
 * buffered events, a read buffer for a replayed log), so without a cap a client opening thousands
 * of streams it never reads could still grow the server without bound. Past a limit a stream is
 * refused with RESOURCE_EXHAUSTED before any job exists; the count is a metric
 * (qlorad.rpc.streams.open, qlorad.rpc.streams.refused).
 */
import { QloradError } from "../util/errors.ts";
import { observeStreams, recordStreamRefused } from "../telemetry/metrics.ts";

/** Streams one connection (peer address) may hold open at once. */
export const DEFAULT_MAX_STREAMS_PER_CONNECTION = 64;
/** Streams the server holds open at once, over all connections. */
export const DEFAULT_MAX_STREAMS = 512;

export class StreamLimiter {
  readonly #perPeer = new Map<string, number>();
  #open = 0;
  readonly #unobserve: () => void;

  constructor(
    readonly maxPerConnection = DEFAULT_MAX_STREAMS_PER_CONNECTION,
    readonly maxTotal = DEFAULT_MAX_STREAMS,
  ) {
    this.#unobserve = observeStreams(() => this.#open);
  }

  /** Streams open now. */
  get open(): number {
    return this.#open;
  }

  /**
   * Counts a new stream of `peer` ("ip:port" of its connection); returns the function that ends
   * it (idempotent). resource_exhausted when a limit is reached.
   */
  acquire(peer: string): () => void {
    const mine = this.#perPeer.get(peer) ?? 0;
    if (mine >= this.maxPerConnection) {
      recordStreamRefused("connection");
      throw new QloradError(
        "resource_exhausted",
        `too many open job streams on this connection (limit ${this.maxPerConnection}); ` +
          `close some, or read them to their end`,
      );
    }
    if (this.#open >= this.maxTotal) {
      recordStreamRefused("total");
      throw new QloradError(
        "resource_exhausted",
        `too many open job streams on the server (limit ${this.maxTotal}); try again later`,
      );
    }
    this.#perPeer.set(peer, mine + 1);
    this.#open++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#open--;
      const left = (this.#perPeer.get(peer) ?? 1) - 1;
      if (left > 0) this.#perPeer.set(peer, left);
      else this.#perPeer.delete(peer);
    };
  }

  close(): void {
    this.#unobserve();
  }
}
