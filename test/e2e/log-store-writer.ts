/**
 * A process that runs executions against the file store as fast as it can and prints
 * `<id> <version>` once each save is acknowledged; saga-log-store.test.ts kills it with
 * SIGKILL mid-run and checks what the store kept. Arguments: folder, concurrent executions.
 */
import { randomUUID } from 'node:crypto';
import { createLogger } from '../../lib/log/index.js';
import { FileSagaStore } from '../../sidecar/saga/file-store.js';
import type { Execution } from '../../sidecar/saga/machine.js';

const [directory, concurrency] = process.argv.slice(2) as [string, string];
const store = new FileSagaStore(directory, {
  // Warnings and errors only: a torn tail cut off on open is worth seeing in the test output.
  log: createLogger('writer', {
    level: 'warn',
    destination: { write: (line: string) => void process.stderr.write(line) },
  }),
  // Small, so compactions happen during the run and a kill can land inside one.
  compactAfterBytes: 256 * 1024,
});

async function run(): Promise<never> {
  for (;;) {
    const id = randomUUID();
    const now = Date.now();
    let execution: Execution = (
      await store.create({
        id,
        saga: 'crash',
        idempotencyKey: id,
        input: { padding: 'x'.repeat(200) },
        state: 'running',
        startedAt: now,
        deadline: now + 60_000,
        updatedAt: now,
        cursor: 0,
        notBefore: now,
        pivotPassed: false,
        steps: ['a', 'b', 'c', 'd'].map((name) => ({
          name,
          status: 'pending' as const,
          attempts: 0,
          compensationAttempts: 0,
        })),
        version: 0,
      })
    ).execution;
    process.stdout.write(`${id} ${execution.version}\n`);
    for (let step = 0; step < 4; step++) {
      execution = await store.save({
        ...execution,
        cursor: step + 1,
        state: step === 3 ? 'completed' : 'running',
        updatedAt: Date.now(),
      });
      process.stdout.write(`${id} ${execution.version}\n`);
    }
  }
}

await Promise.all(Array.from({ length: Number(concurrency) }, () => run()));
