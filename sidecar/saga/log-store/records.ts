/**
 * The log's record framing, pure: each record is its length and CRC-32 followed by the
 * payload, so a reader can tell a whole record from one a crash cut short (a torn write)
 * or one whose bytes changed, and stops there instead of applying half of it.
 */
import { crc32 } from 'node:zlib';
import type { Execution, ExecutionState } from '../machine.js';

/** 4 bytes payload length + 4 bytes CRC-32 of the payload, little-endian. */
export const HEADER_BYTES = 8;
/** Larger lengths can only come from damaged bytes; no execution gets near this. */
export const MAX_RECORD_BYTES = 64 * 2 ** 20;

/**
 * An execution as the store keeps it: its JSON text, as written, and beside it the few fields
 * the store reads without parsing the whole (keys, versions, retention, recovery). The text is
 * kept as UTF-8 bytes, not a string: a store holding 100k finished executions then keeps
 * them off the V8 heap, where every garbage collection would scan and move them (opening such
 * a store spent half its time collecting garbage, and grew faster than the store).
 */
export interface StoredExecution {
  id: string;
  saga: string;
  idempotencyKey: string;
  state: ExecutionState;
  updatedAt: number;
  version: number;
  json: Buffer;
}

/** What the log holds: a whole execution as saved, or the removal of finished ones. */
export type LogEntry = { put: StoredExecution } | { remove: string[] };

export function stored(execution: Execution): StoredExecution {
  const { id, saga, idempotencyKey, state, updatedAt, version } = execution;
  return {
    id,
    saga,
    idempotencyKey,
    state,
    updatedAt,
    version,
    json: Buffer.from(JSON.stringify(execution)),
  };
}

/**
 * A put's payload is a one-line JSON of the fields beside the execution, a newline, then the
 * execution's JSON text (JSON text never holds a raw newline). Opening a store parses only
 * the short first line of each record.
 */
export function encodePut(execution: StoredExecution): Buffer {
  const { json, ...fields } = execution;
  return frame(Buffer.from(`${JSON.stringify(fields)}\n`, 'utf8'), json);
}

export function encodeRemove(ids: readonly string[]): Buffer {
  return frame(Buffer.from(JSON.stringify({ remove: ids }), 'utf8'));
}

/** One record whose payload is `parts` one after the other. */
export function frame(...parts: Buffer[]): Buffer {
  const length = parts.reduce((sum, part) => sum + part.length, 0);
  const record = Buffer.allocUnsafe(HEADER_BYTES + length);
  record.writeUInt32LE(length, 0);
  record.writeUInt32LE(
    parts.reduce((crc, part) => crc32(part, crc), 0),
    4,
  );
  let offset = HEADER_BYTES;
  for (const part of parts) offset += part.copy(record, offset);
  return record;
}

export interface DecodedLog {
  entries: LogEntry[];
  /** Where the whole, intact records read end; after damage, the rest is to be cut off. */
  validBytes: number;
  /** Why decoding stopped before the end, if it did. */
  damage?: 'torn' | 'checksum' | 'unreadable';
}

/**
 * Reads records from `from` until the end, the first record that is not whole and intact, or
 * `maxRecords` records (then `validBytes` is where to go on from).
 */
export function decodeRecords(bytes: Buffer, from = 0, maxRecords = Infinity): DecodedLog {
  const entries: LogEntry[] = [];
  let offset = from;
  while (offset < bytes.length && entries.length < maxRecords) {
    if (bytes.length - offset < HEADER_BYTES) return { entries, validBytes: offset, damage: 'torn' };
    const length = bytes.readUInt32LE(offset);
    if (length > MAX_RECORD_BYTES) return { entries, validBytes: offset, damage: 'checksum' };
    const end = offset + HEADER_BYTES + length;
    if (end > bytes.length) return { entries, validBytes: offset, damage: 'torn' };
    const payload = bytes.subarray(offset + HEADER_BYTES, end);
    if (crc32(payload) !== bytes.readUInt32LE(offset + 4))
      return { entries, validBytes: offset, damage: 'checksum' };
    const entry = parseEntry(payload);
    if (!entry) return { entries, validBytes: offset, damage: 'unreadable' };
    entries.push(entry);
    offset = end;
  }
  return { entries, validBytes: offset };
}

function parseEntry(payload: Buffer): LogEntry | undefined {
  try {
    const newline = payload.indexOf(0x0a);
    if (newline === -1) {
      const value = JSON.parse(payload.toString('utf8')) as Partial<{ remove: string[] }>;
      return Array.isArray(value.remove) ? { remove: value.remove } : undefined;
    }
    const fields = JSON.parse(payload.toString('utf8', 0, newline)) as Omit<StoredExecution, 'json'>;
    if (typeof fields.id !== 'string' || typeof fields.version !== 'number') return undefined;
    // A copy: a view would keep the whole file read at open alive, superseded records too.
    return { put: { ...fields, json: Buffer.from(payload.subarray(newline + 1)) } };
  } catch {
    // A checksum-valid record that is not ours (or from a newer format) is damage: reported by the caller.
    return undefined;
  }
}
