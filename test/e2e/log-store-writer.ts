/**
 * A process that runs executions against the file store as fast as it can and records
 * `<id> <version>` once each save is acknowledged; saga-log-store.test.ts kills it with
 * SIGKILL mid-run and checks what the store kept. Arguments: folder, concurrent executions,
 * acknowledgement file.
 *
 * Each acknowledgement goes to the file with a synchronous write before anything else
 * happens, then to stdout (which the test counts to choose when to kill). stdout alone is
 * not a record: Node queues pipe writes in the process when the reader is slow, and a
 * SIGKILL loses what is queued, so a loaded test saw changes "nobody acknowledged".
 */
import { randomUUID } from 'node:crypto';
import { openSync, writeSync } from 'node:fs';
import { createLogger } from '../../lib/log/index.js';
import { FileSagaStore } from '../../sidecar/saga/file-store.js';
import type { Execution } from '../../sidecar/saga/machine.js';

const [directory, concurrency, ackFile] = process.argv.slice(2) as [string, string, string];
const acks = openSync(ackFile, 'a');

function acknowledge(id: string, version: number): void {
  const line = `${id} ${version}\n`;
  writeSync(acks, line);
  process.stdout.write(line);
}
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
    acknowledge(id, execution.version);
    for (let step = 0; step < 4; step++) {
      execution = await store.save({
        ...execution,
        cursor: step + 1,
        state: step === 3 ? 'completed' : 'running',
        updatedAt: Date.now(),
      });
      acknowledge(id, execution.version);
    }
  }
}

await Promise.all(Array.from({ length: Number(concurrency) }, () => run()));
