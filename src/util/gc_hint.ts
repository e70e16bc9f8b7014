/**
 * Asks V8 for a collection when the process runs with `--v8-flags=--expose-gc` (the service
 * and CLI tasks do). Streaming work that drops a large typed array per item calls this so
 * freed buffers go back at once instead of piling up to V8's external-memory threshold
 * (about 100 MB here). Without the flag it does nothing.
 */
export function releaseFreedMemory(): void {
  (globalThis as { gc?: () => void }).gc?.();
}
