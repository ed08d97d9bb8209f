/**
 * The file store as it was before the append-only log (commit 8def6dc), kept only so the saga
 * benchmark can measure before and after in the same run. Not used by the sidecar.
 */
/**
 * The embedded store for one machine: one JSON file per execution, written to a temporary
 * file, fsync'd and renamed over the old one (then the folder fsync'd), so a crash leaves
 * either the old or the new state, never half of one. One orchestrator process owns the
 * folder at a time (a lock file holding its pid).
 */
import { createHash } from 'node:crypto';
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { isAlive } from '../../lib/process/index.js';
import type { Execution } from '../../sidecar/saga/machine.js';
import { ConflictError, type SagaStore } from '../../sidecar/saga/store.js';

export class BaselineFileSagaStore implements SagaStore {
  private readonly executions: string;
  private readonly keys: string;

  constructor(private readonly directory: string) {
    this.executions = join(directory, 'executions');
    this.keys = join(directory, 'keys');
    mkdirSync(this.executions, { recursive: true });
    mkdirSync(this.keys, { recursive: true });
    this.lock();
  }

  async create(execution: Execution): Promise<{ execution: Execution; created: boolean }> {
    const keyFile = join(this.keys, keyName(execution.saga, execution.idempotencyKey));
    try {
      const existing = readFileSync(keyFile, 'utf8');
      const found = await this.get(existing);
      if (found) return { execution: found, created: false };
    } catch {
      // No execution for this key yet.
    }
    const saved = { ...execution, version: 1 };
    durableWrite(join(this.executions, `${execution.id}.json`), JSON.stringify(saved));
    durableWrite(keyFile, execution.id);
    return { execution: saved, created: true };
  }

  async save(execution: Execution): Promise<Execution> {
    const current = await this.get(execution.id);
    if (!current || current.version !== execution.version) {
      throw new ConflictError(`execution ${execution.id} changed since version ${execution.version}`);
    }
    const saved = { ...execution, version: execution.version + 1 };
    durableWrite(join(this.executions, `${execution.id}.json`), JSON.stringify(saved));
    return saved;
  }

  async get(id: string): Promise<Execution | undefined> {
    try {
      return JSON.parse(readFileSync(join(this.executions, `${id}.json`), 'utf8')) as Execution;
    } catch {
      return undefined;
    }
  }

  async list(): Promise<Execution[]> {
    const files = readdirSync(this.executions).filter((f) => f.endsWith('.json'));
    const executions: Execution[] = [];
    for (const file of files) {
      const execution = await this.get(file.slice(0, -'.json'.length));
      if (execution) executions.push(execution);
    }
    return executions;
  }

  /** One process owns the whole folder, so every execution in it is its own. */
  async unfinished(): Promise<Execution[]> {
    return (await this.list()).filter(
      (e) => !['completed', 'compensated', 'compensation-failed'].includes(e.state),
    );
  }

  /** The old store kept finished executions forever. */
  async prune(): Promise<number> {
    return 0;
  }

  async claim(): Promise<boolean> {
    return true;
  }

  async release(): Promise<void> {}

  async close(): Promise<void> {
    rmSync(join(this.directory, 'owner.pid'), { force: true });
  }

  private lock(): void {
    const file = join(this.directory, 'owner.pid');
    try {
      const pid = Number(readFileSync(file, 'utf8'));
      if (pid && pid !== process.pid && isAlive(pid)) {
        throw new Error(
          `saga store ${this.directory} is in use by process ${pid}; one orchestrator per folder (use the Consul store to run several)`,
        );
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    durableWrite(file, String(process.pid));
  }
}

function keyName(saga: string, key: string): string {
  return createHash('sha256').update(`${saga}\n${key}`).digest('hex');
}

function durableWrite(path: string, content: string): void {
  const temporary = `${path}.tmp-${process.pid}`;
  const fd = openSync(temporary, 'w');
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, path);
  const folder = openSync(join(path, '..'), 'r');
  try {
    fsyncSync(folder);
  } finally {
    closeSync(folder);
  }
}
