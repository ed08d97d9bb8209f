/**
 * The executions a log describes, in memory, pure: replaying log entries builds it, and the
 * store checks idempotency keys and versions against it before appending. Each execution is
 * kept as its JSON bytes (what the log holds anyway) plus the few fields retention and
 * recovery read, so 100k finished executions cost their bytes, not a tree of objects.
 */
import { TERMINAL_STATES } from '../machine.js';
import type { LogEntry, StoredExecution } from './records.js';

export type Row = StoredExecution;

export class ExecutionTable {
  private readonly rows = new Map<string, Row>();
  private readonly byKey = new Map<string, string>();
  private readonly unfinishedIds = new Set<string>();
  /** Sum of the JSON text held: what a compacted log would take. */
  liveBytes = 0;

  apply(entry: LogEntry): void {
    if ('put' in entry) this.put(entry.put);
    else this.remove(entry.remove);
  }

  put(row: Row): void {
    const previous = this.rows.get(row.id);
    if (previous) this.liveBytes -= previous.json.length;
    this.rows.set(row.id, row);
    this.byKey.set(keyOf(row.saga, row.idempotencyKey), row.id);
    if (TERMINAL_STATES.includes(row.state)) this.unfinishedIds.delete(row.id);
    else this.unfinishedIds.add(row.id);
    this.liveBytes += row.json.length;
  }

  remove(ids: readonly string[]): void {
    for (const id of ids) {
      const row = this.rows.get(id);
      if (!row) continue;
      this.rows.delete(id);
      this.unfinishedIds.delete(id);
      this.liveBytes -= row.json.length;
      const key = keyOf(row.saga, row.idempotencyKey);
      if (this.byKey.get(key) === id) this.byKey.delete(key);
    }
  }

  get(id: string): Row | undefined {
    return this.rows.get(id);
  }

  byIdempotencyKey(saga: string, idempotencyKey: string): Row | undefined {
    const id = this.byKey.get(keyOf(saga, idempotencyKey));
    return id === undefined ? undefined : this.rows.get(id);
  }

  all(): IterableIterator<Row> {
    return this.rows.values();
  }

  unfinished(): Row[] {
    return [...this.unfinishedIds].map((id) => this.rows.get(id) as Row);
  }

  get size(): number {
    return this.rows.size;
  }
}

function keyOf(saga: string, idempotencyKey: string): string {
  return `${saga}\n${idempotencyKey}`;
}
