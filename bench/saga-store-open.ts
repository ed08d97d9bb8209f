/**
 * Opens a file saga store in a fresh process and prints what it cost, as JSON on stdout:
 * the time to read and replay the log, and memory after a full GC. Run by
 * saga-throughput.ts (with --expose-gc) on stores it filled.
 */
import { createLogger } from '../lib/log/index.js';
import { FileSagaStore } from '../sidecar/saga/file-store.js';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc');
gc();
const before = process.memoryUsage();
const store = new FileSagaStore(process.argv[2] as string, {
  log: createLogger('open', { destination: { write: () => undefined } }),
});
const opened = await store.opened;
// The log's read buffers are returned by a background sweeper some time after the GC that
// frees them: collect a few times with pauses so they are not counted.
for (let i = 0; i < 3; i++) {
  await new Promise((resolve) => setTimeout(resolve, 300));
  gc();
}
const after = process.memoryUsage();
process.stdout.write(
  `${JSON.stringify({
    ms: opened.ms,
    executions: opened.executions,
    heapMiB: (after.heapUsed - before.heapUsed) / 2 ** 20,
    externalMiB: (after.external - before.external) / 2 ** 20,
    rssMiB: after.rss / 2 ** 20,
  })}\n`,
);
await store.close();
