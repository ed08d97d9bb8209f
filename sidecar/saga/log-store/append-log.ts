/**
 * The append-only log on disk: numbered segments of framed records (records.ts) and, after a
 * compaction, a snapshot holding every live execution as of the start of its segment.
 *
 * Group commit: records appended while a write is in flight wait in a queue and go out
 * together in the next write + fdatasync, so one sync covers many executions' changes. The
 * writes and syncs run on libuv's thread pool (async fs), never on the event loop, so the
 * proxy sharing the process keeps serving while the disk works.
 *
 * Compaction: when the segments since the last snapshot grow past a bound, appends move to
 * a new segment N and the live executions are written to `N.snapshot.tmp`, synced, and
 * renamed to `N.snapshot` (atomic), after which segments before N are deleted. Opening
 * reads the newest snapshot and replays the segments from its number on; a crash at any
 * point of a compaction leaves either the old segments or the new snapshot to read.
 */
import { fdatasync, open, writev, close as closeFd } from 'node:fs';
import { mkdir, open as openHandle, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from '../../../lib/log/index.js';
import { decodeRecords, encodePut, type LogEntry, type StoredExecution } from './records.js';

const writevAsync = promisify(writev);
const datasyncAsync = promisify(fdatasync);
const openAsync = promisify(open);
const closeAsync = promisify(closeFd);
/** Snapshot writes go out in pieces of about this size, yielding to the event loop between. */
const SNAPSHOT_CHUNK_BYTES = 2 ** 20;

export interface AppendLogOptions {
  /** Compact when the segments since the last snapshot exceed this and twice the live data. */
  compactAfterBytes: number;
  log: Logger;
}

export interface ReplayReport {
  segments: number;
  records: number;
  /** Bytes of a torn or damaged tail that were cut off instead of applied. */
  discardedBytes: number;
}

/** What a compaction keeps: the live executions as they are now. */
export interface LiveData {
  bytes(): number;
  executions(): StoredExecution[];
}

interface Waiter {
  resolve: () => void;
  reject: (error: Error) => void;
}

export class AppendLog {
  private queue: Buffer[] = [];
  private waiters: Waiter[] = [];
  private writing = false;
  private drained?: () => void;
  private failure?: Error;
  private compaction?: Promise<void>;
  private rotateRequested = false;
  private closed = false;
  /** Compactions finished, and those that failed (each failure is logged). */
  readonly stats = { compactions: 0, compactionFailures: 0, syncs: 0 };

  private constructor(
    private readonly directory: string,
    private fd: number,
    private segment: number,
    private bytesSinceSnapshot: number,
    private readonly live: LiveData,
    private readonly options: AppendLogOptions,
  ) {}

  /**
   * Opens the log in `directory`, replaying every intact record into `apply`. Reads are
   * async and replay yields to the event loop every few thousand records, so a sidecar
   * opening a large store keeps proxying meanwhile.
   */
  static async open(
    directory: string,
    apply: (entry: LogEntry) => void,
    live: LiveData,
    options: AppendLogOptions,
  ): Promise<{ log: AppendLog; replay: ReplayReport }> {
    await mkdir(directory, { recursive: true });
    const names = await readdir(directory);
    for (const name of names.filter((n) => n.endsWith('.tmp'))) await rm(join(directory, name));
    const snapshots = numbered(names, '.snapshot');
    const segments = numbered(names, '.wal');
    const base = snapshots.at(-1) ?? 0;
    const replay: ReplayReport = { segments: 0, records: 0, discardedBytes: 0 };
    if (base > 0) {
      const file = join(directory, fileName(base, '.snapshot'));
      const read = await replayFile(file, apply);
      replay.records += read.records;
      // A snapshot is synced before it is renamed into place, so damage here is the disk's.
      if (read.damage)
        throw new Error(
          `saga store snapshot ${file} is damaged (${read.damage} record at byte ${read.validBytes}); opening it would lose executions: restore the folder from a backup or move it aside`,
        );
    }
    const replayed = segments.filter((s) => s >= base);
    let bytesSinceSnapshot = 0;
    for (const [index, segment] of replayed.entries()) {
      const file = join(directory, fileName(segment, '.wal'));
      const read = await replayFile(file, apply);
      replay.segments++;
      replay.records += read.records;
      bytesSinceSnapshot += read.validBytes;
      if (!read.damage) continue;
      replay.discardedBytes += read.size - read.validBytes;
      const details = {
        file,
        damage: read.damage,
        at: read.validBytes,
        discardedBytes: read.size - read.validBytes,
      };
      if (index === replayed.length - 1) {
        // The tail a crash cut short: cut it off so new records follow whole ones.
        options.log.warn('saga store: ignored a torn or damaged last record', details);
        const handle = await openHandle(file, 'r+');
        try {
          await handle.truncate(read.validBytes);
          await handle.sync();
        } finally {
          await handle.close();
        }
      } else {
        // Segments before the last were synced whole before the next one began.
        options.log.error(
          'saga store: damaged record inside an earlier segment; the rest of it is skipped',
          details,
        );
      }
    }
    // Leftovers of a compaction that was interrupted after its snapshot was in place.
    for (const segment of segments.filter((s) => s < base))
      await rm(join(directory, fileName(segment, '.wal')));
    for (const snapshot of snapshots.filter((s) => s < base))
      await rm(join(directory, fileName(snapshot, '.snapshot')));
    const active = Math.max(replayed.at(-1) ?? 1, base, 1);
    const fd = await openAsync(join(directory, fileName(active, '.wal')), 'a');
    await syncDirectoryAsync(directory);
    return {
      log: new AppendLog(directory, fd, active, bytesSinceSnapshot, live, options),
      replay,
    };
  }

  /** Resolves once `records` are on disk (written and fdatasync'd), with others' records. */
  append(records: Buffer[]): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new Error('saga store is closed'));
    return new Promise((resolve, reject) => {
      this.queue.push(...records);
      this.waiters.push({ resolve, reject });
      if (!this.writing) void this.drain();
    });
  }

  /** Waits for queued records and a running compaction, then closes the segment. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.writing) await new Promise<void>((resolve) => (this.drained = resolve));
    await this.compaction;
    await closeAsync(this.fd);
  }

  private async drain(): Promise<void> {
    this.writing = true;
    // One sync may be in flight while the next batch is written, so changes that arrive
    // during a sync do not wait for it to end before their own write begins.
    let syncing: { done: Promise<Error | undefined>; waiters: Waiter[] } | undefined;
    const settle = async () => {
      if (!syncing) return;
      // Left in place on failure, so the catch below rejects its waiters too.
      const error = await syncing.done;
      if (error) throw error;
      const { waiters } = syncing;
      syncing = undefined;
      this.stats.syncs++;
      for (const waiter of waiters) waiter.resolve();
      this.considerCompaction();
    };
    let batchWaiters: Waiter[] = [];
    try {
      while (!this.failure && (this.queue.length > 0 || syncing)) {
        // A rotation moves appends to a new file: the old one's sync must be done first.
        if (this.queue.length === 0 || this.rotateRequested) await settle();
        if (this.rotateRequested) await this.startCompaction();
        if (this.queue.length === 0) continue;
        const batch = this.queue;
        batchWaiters = this.waiters;
        this.queue = [];
        this.waiters = [];
        this.bytesSinceSnapshot += await writeFully(this.fd, batch);
        // Kept as a value, not a rejection, until awaited: nothing may reject unobserved.
        const done = datasyncAsync(this.fd).then(
          () => undefined,
          (error: unknown) => error as Error,
        );
        await settle();
        syncing = { done, waiters: batchWaiters };
        batchWaiters = [];
      }
    } catch (error) {
      this.fail(error as Error, [...(syncing?.waiters ?? []), ...batchWaiters, ...this.waiters]);
    }
    this.writing = false;
    this.drained?.();
  }

  /**
   * After a failed write or sync the file's state is unknown (Linux may drop the dirty pages
   * and report the error once), so the log refuses all further appends rather than go on
   * from a state it cannot trust. The sidecar must restart and replay the log.
   */
  private fail(error: Error, waiters: Waiter[]): void {
    this.failure = new Error(`saga store: writing the log in ${this.directory} failed: ${error.message}`, {
      cause: error,
    });
    this.options.log.error('saga store: log write failed; refusing further changes until restart', {
      directory: this.directory,
      segment: this.segment,
      error: error.message,
    });
    this.queue = [];
    this.waiters = [];
    for (const waiter of waiters) waiter.reject(this.failure);
  }

  private considerCompaction(): void {
    if (this.compaction || this.rotateRequested) return;
    const { compactAfterBytes } = this.options;
    if (this.bytesSinceSnapshot > compactAfterBytes && this.bytesSinceSnapshot > 2 * this.live.bytes())
      this.rotateRequested = true;
  }

  /** Moves appends to a new segment now, and writes the snapshot for it in the background. */
  private async startCompaction(): Promise<void> {
    this.rotateRequested = false;
    try {
      await this.rotate();
    } catch (error) {
      // Appends stay in the current segment; the next bound crossing tries again.
      this.compactionFailed(this.segment + 1, error);
    }
  }

  private async rotate(): Promise<void> {
    // The table already holds the queued records' changes; they are replayed again from the
    // new segment over the snapshot, which is harmless: each record is a whole execution.
    const executions = this.live.executions();
    const next = this.segment + 1;
    const fd = await openAsync(join(this.directory, fileName(next, '.wal')), 'a');
    await syncDirectoryAsync(this.directory);
    const previous = this.fd;
    this.fd = fd;
    this.segment = next;
    this.bytesSinceSnapshot = 0;
    await closeAsync(previous);
    this.compaction = this.writeSnapshot(next, executions).then(
      () => {
        this.stats.compactions++;
      },
      // The segments are still all there; the next compaction tries again.
      (error: unknown) => this.compactionFailed(next, error),
    );
    void this.compaction.finally(() => (this.compaction = undefined));
  }

  private compactionFailed(segment: number, error: unknown): void {
    this.stats.compactionFailures++;
    this.options.log.error('saga store: compaction failed; the log keeps its segments', {
      directory: this.directory,
      segment,
      error: String(error),
    });
  }

  private async writeSnapshot(segment: number, executions: StoredExecution[]): Promise<void> {
    const final = join(this.directory, fileName(segment, '.snapshot'));
    const temporary = `${final}.tmp`;
    const handle = await openHandle(temporary, 'w');
    try {
      let chunk: Buffer[] = [];
      let size = 0;
      for (const execution of executions) {
        const record = encodePut(execution);
        chunk.push(record);
        size += record.length;
        if (size >= SNAPSHOT_CHUNK_BYTES) {
          await handle.write(Buffer.concat(chunk));
          chunk = [];
          size = 0;
        }
      }
      if (chunk.length > 0) await handle.write(Buffer.concat(chunk));
      await handle.datasync();
    } finally {
      await handle.close();
    }
    await rename(temporary, final);
    await syncDirectoryAsync(this.directory);
    const names = await readdir(this.directory);
    for (const old of numbered(names, '.wal').filter((s) => s < segment))
      await rm(join(this.directory, fileName(old, '.wal')));
    for (const old of numbered(names, '.snapshot').filter((s) => s < segment))
      await rm(join(this.directory, fileName(old, '.snapshot')));
    await syncDirectoryAsync(this.directory);
  }
}

/** Records replayed between yields to the event loop while opening. */
const REPLAY_RECORDS_PER_TURN = 2000;

async function replayFile(
  file: string,
  apply: (entry: LogEntry) => void,
): Promise<{ records: number; size: number; validBytes: number; damage?: string }> {
  const bytes = await readFile(file);
  let offset = 0;
  let records = 0;
  for (;;) {
    const decoded = decodeRecords(bytes, offset, REPLAY_RECORDS_PER_TURN);
    for (const entry of decoded.entries) apply(entry);
    records += decoded.entries.length;
    offset = decoded.validBytes;
    if (decoded.damage) return { records, size: bytes.length, validBytes: offset, damage: decoded.damage };
    if (offset >= bytes.length) return { records, size: bytes.length, validBytes: offset };
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** Writes the records in order with writev (no copy into one buffer); returns the bytes written. */
async function writeFully(fd: number, records: Buffer[]): Promise<number> {
  let pending = records;
  let total = 0;
  while (pending.length > 0) {
    const { bytesWritten } = await writevAsync(fd, pending);
    total += bytesWritten;
    pending = skip(pending, bytesWritten);
  }
  return total;
}

/** The buffers after the first `bytes` bytes (a short write can stop inside one). */
function skip(buffers: Buffer[], bytes: number): Buffer[] {
  let left = bytes;
  let index = 0;
  while (index < buffers.length && left >= (buffers[index] as Buffer).length) {
    left -= (buffers[index] as Buffer).length;
    index++;
  }
  const rest = buffers.slice(index);
  if (left > 0 && rest.length > 0) rest[0] = (rest[0] as Buffer).subarray(left);
  return rest;
}

function numbered(names: string[], suffix: string): number[] {
  return names
    .filter((n) => n.endsWith(suffix) && /^[0-9]+$/.test(n.slice(0, -suffix.length)))
    .map((n) => Number(n.slice(0, -suffix.length)))
    .sort((a, b) => a - b);
}

function fileName(sequence: number, suffix: string): string {
  return `${String(sequence).padStart(10, '0')}${suffix}`;
}

/** A new or renamed file is only durable once its folder's entry is. */
async function syncDirectoryAsync(directory: string): Promise<void> {
  const handle = await openHandle(directory, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
