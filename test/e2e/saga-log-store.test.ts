import { afterAll, describe, expect, it } from '@jest/globals';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../lib/log/index.js';
import { FileSagaStore } from '../../sidecar/saga/file-store.js';
import { REPO_DIR } from '../env/components.js';

/**
 * The file store's log under kill -9: a real writer process on a real folder, killed at
 * random points (mid-group-commit, mid-compaction); every change it was told is durable
 * must be there on reopen, and nothing it never wrote.
 */
const dir = mkdtempSync(join(tmpdir(), 'aimesh-log-crash-'));
const ackDir = mkdtempSync(join(tmpdir(), 'aimesh-log-acks-'));
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(ackDir, { recursive: true, force: true });
});

/**
 * Runs the writer until it has acknowledged about `acks` changes (plus a random bit), then
 * SIGKILLs it; what it acknowledged, from its acknowledgement file (stdout only counts).
 */
async function runAndKill(acks: number, round: number): Promise<Map<string, number>> {
  const ackFile = join(ackDir, `round-${round}.acks`);
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(REPO_DIR, 'test', 'e2e', 'log-store-writer.ts'), dir, '64', ackFile],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const killAfter = acks + Math.floor(Math.random() * acks);
  let count = 0;
  const exited = new Promise<string | null>((resolve) =>
    child.once('close', (_code, signal) => resolve(signal)),
  );
  child.stdout.on('data', (chunk: Buffer) => {
    for (const byte of chunk) if (byte === 0x0a && ++count === killAfter) child.kill('SIGKILL');
  });
  expect(await exited).toBe('SIGKILL');
  const acknowledged = new Map<string, number>();
  for (const line of readFileSync(ackFile, 'utf8').split('\n')) {
    if (!line) continue;
    const [id, version] = line.split(' ') as [string, string];
    acknowledged.set(id, Math.max(acknowledged.get(id) ?? 0, Number(version)));
  }
  return acknowledged;
}

describe('file store under kill -9', () => {
  it('keeps every acknowledged change through five kills, and no change it never made', async () => {
    const acknowledged = new Map<string, number>();
    for (let round = 0; round < 5; round++) {
      for (const [id, version] of await runAndKill(4000, round)) acknowledged.set(id, version);
      const store = new FileSagaStore(dir, {
        log: createLogger('test', { destination: { write: () => undefined } }),
      });
      try {
        const all = new Map((await store.list()).map((e) => [e.id, e]));
        const lost = [...acknowledged].filter(([id, version]) => (all.get(id)?.version ?? 0) < version);
        expect(lost).toEqual([]);
        // At most the one change per execution that was written but not yet acknowledged.
        const ahead = [...all.values()].filter((e) => e.version > (acknowledged.get(e.id) ?? 0) + 1);
        expect(ahead).toEqual([]);
        expect([...all.values()].every((e) => e.cursor === e.version - 1)).toBe(true);
      } finally {
        await store.close();
      }
    }
    expect(acknowledged.size).toBeGreaterThan(1000);
  });
});
