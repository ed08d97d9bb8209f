/**
 * The embedded store for one machine: an append-only log (log-store/append-log.ts) whose
 * records are whole executions, with the current state of each held in memory. A change is
 * checked against memory (idempotency key, version), appended, and reported saved only once
 * its group commit is fdatasync'd; readers wait for that too, so nobody sees a state a crash
 * could take back. One orchestrator process owns the folder at a time (a lock file holding
 * its pid).
 */
import {
  closeSync,
  existsSync,
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
import { createLogger, type Logger } from '../../lib/log/index.js';
import { AppendLog, type ReplayReport } from './log-store/append-log.js';
import { encodePut, encodeRemove, stored } from './log-store/records.js';
import { ExecutionTable, type Row } from './log-store/table.js';
import type { Execution } from './machine.js';
import { expiredExecutions, type RetentionPolicies } from './retention.js';
import { ConflictError, type SagaStore } from './store.js';

export interface FileStoreOptions {
  log?: Logger;
  /** Compact once the log since the last snapshot is larger than this (and than twice the live data). */
  compactAfterBytes?: number;
}

/** Removals go out in records of at most this many ids, so no record gets large. */
const REMOVALS_PER_RECORD = 5000;

export class FileSagaStore implements SagaStore {
  private readonly table = new ExecutionTable();
  private log?: AppendLog;
  /** Rows whose latest change is appended but not yet on disk, and the wait for it. */
  private readonly pending = new Map<string, Promise<void>>();
  /**
   * What opening found: records replayed, torn bytes cut off, and how long it took. Every
   * call waits for it; a store that cannot be opened fails every call with the reason.
   */
  readonly opened: Promise<ReplayReport & { executions: number; ms: number }>;

  /** Takes the folder's lock at once (throwing if a live process holds it), then opens the log. */
  constructor(
    private readonly directory: string,
    options: FileStoreOptions = {},
  ) {
    const started = performance.now();
    const log = options.log ?? createLogger('saga-store');
    mkdirSync(directory, { recursive: true });
    lock(directory);
    importPerExecutionFiles(directory, log);
    this.opened = AppendLog.open(
      join(directory, 'log'),
      (entry) => this.table.apply(entry),
      {
        bytes: () => this.table.liveBytes,
        executions: () => [...this.table.all()],
      },
      { compactAfterBytes: options.compactAfterBytes ?? 64 * 2 ** 20, log },
    ).then(({ log: appendLog, replay }) => {
      this.log = appendLog;
      const report = { ...replay, executions: this.table.size, ms: performance.now() - started };
      log.info('saga store opened', { directory, ...report });
      return report;
    });
    // Callers get the failure from their own call; this makes sure it is seen even if none comes.
    this.opened.catch((error: unknown) =>
      log.error('saga store could not be opened', { directory, error: String(error) }),
    );
  }

  /** Syncs and compactions so far: how many changes each sync carried, for benchmarks and tests. */
  get stats(): Readonly<{ syncs: number; compactions: number; compactionFailures: number }> {
    return this.log?.stats ?? { syncs: 0, compactions: 0, compactionFailures: 0 };
  }

  async create(execution: Execution): Promise<{ execution: Execution; created: boolean }> {
    await this.opened;
    const existing = this.table.byIdempotencyKey(execution.saga, execution.idempotencyKey);
    if (existing) return { execution: await this.read(existing), created: false };
    const saved = { ...execution, version: 1 };
    await this.write(saved);
    return { execution: saved, created: true };
  }

  async save(execution: Execution): Promise<Execution> {
    await this.opened;
    const current = this.table.get(execution.id);
    if (!current || current.version !== execution.version) {
      throw new ConflictError(`execution ${execution.id} changed since version ${execution.version}`);
    }
    const saved = { ...execution, version: execution.version + 1 };
    await this.write(saved);
    return saved;
  }

  async get(id: string): Promise<Execution | undefined> {
    await this.opened;
    const row = this.table.get(id);
    return row && this.read(row);
  }

  async list(): Promise<Execution[]> {
    await this.opened;
    return Promise.all(Array.from(this.table.all(), (row) => this.read(row)));
  }

  async unfinished(): Promise<Execution[]> {
    await this.opened;
    return Promise.all(this.table.unfinished().map((row) => this.read(row)));
  }

  async prune(policies: RetentionPolicies, nowMs: number): Promise<number> {
    const log = await this.appendLog();
    const expired = expiredExecutions(this.table.all(), policies, nowMs);
    if (expired.length === 0) return 0;
    this.table.remove(expired);
    const records: Buffer[] = [];
    for (let i = 0; i < expired.length; i += REMOVALS_PER_RECORD)
      records.push(encodeRemove(expired.slice(i, i + REMOVALS_PER_RECORD)));
    await log.append(records);
    return expired.length;
  }

  /** One process owns the whole folder, so every execution in it is its own. */
  async claim(): Promise<boolean> {
    return true;
  }

  async release(): Promise<void> {}

  async close(): Promise<void> {
    try {
      await (await this.appendLog()).close();
    } finally {
      rmSync(join(this.directory, 'owner.pid'), { force: true });
    }
  }

  /** Appends a whole execution; memory changes at once, so the next check sees it. */
  private async write(execution: Execution): Promise<void> {
    const log = await this.appendLog();
    // From here to `pending.set` nothing awaits, so no reader sees the row without its wait.
    const row = stored(execution);
    this.table.put(row);
    const durable = log.append([encodePut(row)]);
    this.pending.set(execution.id, durable);
    try {
      await durable;
    } finally {
      if (this.pending.get(execution.id) === durable) this.pending.delete(execution.id);
    }
  }

  private async appendLog(): Promise<AppendLog> {
    await this.opened;
    return this.log as AppendLog;
  }

  private async read(row: Row): Promise<Execution> {
    const json = row.json;
    await this.pending.get(row.id);
    return JSON.parse(json.toString('utf8')) as Execution;
  }
}

/**
 * Folders written before the log (one JSON file per execution under executions/, one per
 * idempotency key under keys/) are carried over once: every execution goes into segment 0,
 * synced, and only then are the old folders removed. A crash in between leaves segment 0
 * in place, and the next open only removes the old folders.
 */
function importPerExecutionFiles(directory: string, log: Logger): void {
  const old = join(directory, 'executions');
  if (!existsSync(old)) return;
  const logDirectory = join(directory, 'log');
  const segment = join(logDirectory, '0000000000.wal');
  if (!existsSync(segment)) {
    mkdirSync(logDirectory, { recursive: true });
    const records: Buffer[] = [];
    for (const name of readdirSync(old).filter((n) => n.endsWith('.json'))) {
      try {
        records.push(encodePut(stored(JSON.parse(readFileSync(join(old, name), 'utf8')) as Execution)));
      } catch (error) {
        log.error('saga store: an execution file of the old layout is unreadable; not carried over', {
          file: join(old, name),
          error: String(error),
        });
      }
    }
    const temporary = `${segment}.import`;
    writeDurably(temporary, Buffer.concat(records));
    renameSync(temporary, segment);
    syncFolder(logDirectory);
    log.info('saga store: carried executions over from the one-file-per-execution layout', {
      directory,
      executions: records.length,
    });
  }
  rmSync(old, { recursive: true, force: true });
  rmSync(join(directory, 'keys'), { recursive: true, force: true });
  syncFolder(directory);
}

function writeDurably(file: string, content: Buffer): void {
  const fd = openSync(file, 'w');
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function syncFolder(folder: string): void {
  const fd = openSync(folder, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Refuses a folder a live process holds; takes it over from a dead one. The lock holds the
 * owner's pid and, where /proc exists, its start time: a pid reused by an unrelated process
 * after the owner died (a stale lock) does not keep the folder locked.
 */
function lock(directory: string): void {
  const file = join(directory, 'owner.pid');
  if (existsSync(file)) {
    const [pidText, startedText] = readFileSync(file, 'utf8').trim().split(' ');
    const pid = Number(pidText);
    const holds =
      pid > 0 &&
      pid !== process.pid &&
      isAlive(pid) &&
      (startedText === undefined || processStartTime(pid) === startedText);
    if (holds) {
      throw new Error(
        `saga store ${directory} is in use by process ${pid}; one orchestrator per folder (use the Consul store to run several)`,
      );
    }
  }
  const started = processStartTime(process.pid);
  // Synchronous on purpose: it runs once at startup, before anything is served.
  writeDurably(file, Buffer.from(started === undefined ? String(process.pid) : `${process.pid} ${started}`));
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), if there is /proc. */
export function processStartTime(pid: number): string | undefined {
  try {
    return parseStartTime(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    // No /proc (not Linux) or the process is gone: the pid alone decides.
    return undefined;
  }
}

/** The command name (field 2) may hold spaces and parentheses, so fields count from its last ")". */
export function parseStartTime(stat: string): string | undefined {
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}
