import { afterEach, describe, expect, it } from '@jest/globals';
import {
  appendFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../../lib/log/index.js';
import { FileSagaStore, parseStartTime, processStartTime } from '../../../sidecar/saga/file-store.js';
import {
  decodeRecords,
  encodePut,
  frame,
  stored,
  encodeRemove,
  HEADER_BYTES,
} from '../../../sidecar/saga/log-store/records.js';
import { ExecutionTable } from '../../../sidecar/saga/log-store/table.js';
import type { Execution } from '../../../sidecar/saga/machine.js';
import { expiredExecutions } from '../../../sidecar/saga/retention.js';
import { ConflictError } from '../../../sidecar/saga/store.js';

function execution(id: string, overrides: Partial<Execution> = {}): Execution {
  return {
    id,
    saga: 'health-data',
    idempotencyKey: `key-${id}`,
    input: { userId: id },
    state: 'running',
    startedAt: 1000,
    deadline: 301_000,
    updatedAt: 1000,
    cursor: 0,
    notBefore: 1000,
    pivotPassed: false,
    steps: [{ name: 'validate_user', status: 'pending', attempts: 0, compensationAttempts: 0 }],
    version: 0,
    ...overrides,
  };
}

function flipByte(bytes: Buffer, at: number): void {
  bytes.writeUInt8(bytes.readUInt8(at) ^ 0xff, at);
}

describe('log records', () => {
  const records = [
    encodePut(stored(execution('a'))),
    encodePut(stored(execution('b', { version: 2 }))),
    encodeRemove(['a']),
  ];
  const log = Buffer.concat(records);

  it('read back whole, each put with its fields and its JSON text as written', () => {
    const decoded = decodeRecords(log);
    expect(decoded.damage).toBeUndefined();
    expect(decoded.validBytes).toBe(log.length);
    expect(decoded.entries).toEqual([
      { put: stored(execution('a')) },
      { put: stored(execution('b', { version: 2 })) },
      { remove: ['a'] },
    ]);
  });

  it('a last record cut short at any byte is reported torn and not applied', () => {
    const whole = records[0]!.length + records[1]!.length;
    for (let cut = whole + 1; cut < log.length; cut++) {
      const decoded = decodeRecords(log.subarray(0, cut));
      expect(decoded).toMatchObject({ validBytes: whole, damage: 'torn' });
      expect(decoded.entries).toHaveLength(2);
    }
  });

  it('a changed byte in a record fails its checksum; it and everything after it are ignored', () => {
    const damaged = Buffer.from(log);
    const second = records[0]!.length;
    flipByte(damaged, second + HEADER_BYTES + 10);
    const decoded = decodeRecords(damaged);
    expect(decoded).toMatchObject({ validBytes: second, damage: 'checksum' });
    expect(decoded.entries).toHaveLength(1);
  });

  it('a record with a valid checksum but a payload that is not a put or a removal is damage too', () => {
    for (const payload of ['{"id":1}\n{}', 'not json\n{}', '{"other":true}']) {
      const decoded = decodeRecords(Buffer.concat([records[0]!, frame(Buffer.from(payload))]));
      expect(decoded).toMatchObject({ validBytes: records[0]!.length, damage: 'unreadable' });
    }
  });

  it('a length no record can have is damage, not a request to read gigabytes', () => {
    const damaged = Buffer.from(log);
    damaged.writeUInt32LE(0xfffffff0, 0);
    expect(decodeRecords(damaged)).toMatchObject({ validBytes: 0, damage: 'checksum', entries: [] });
  });
});

describe('execution table', () => {
  it('tracks keys, versions, unfinished executions and live bytes through puts and removals', () => {
    const table = new ExecutionTable();
    const a = execution('a', { version: 1 });
    table.put(stored(a));
    const b = execution('b', { version: 3, state: 'completed' });
    table.put(stored(b));
    expect(table.byIdempotencyKey('health-data', 'key-a')?.id).toBe('a');
    expect(table.byIdempotencyKey('other-saga', 'key-a')).toBeUndefined();
    expect(table.unfinished().map((r) => r.id)).toEqual(['a']);
    expect(table.liveBytes).toBe(JSON.stringify(a).length + JSON.stringify(b).length);
    const finishedA = { ...a, state: 'compensated' as const, version: 2 };
    table.apply({ put: stored(finishedA) });
    expect(table.unfinished()).toEqual([]);
    expect(table.get('a')?.version).toBe(2);
    table.apply({ remove: ['a', 'missing'] });
    expect(table.get('a')).toBeUndefined();
    expect(table.byIdempotencyKey('health-data', 'key-a')).toBeUndefined();
    expect(table.size).toBe(1);
    expect(table.liveBytes).toBe(JSON.stringify(b).length);
  });
});

describe('retention', () => {
  const policies = new Map([['health-data', { finishedMs: 60_000, maxFinished: 2 }]]);
  const summary = (id: string, state: Execution['state'], updatedAt: number, saga = 'health-data') => ({
    id,
    saga,
    state,
    updatedAt,
  });

  it('removes finished executions older than the policy, then the oldest beyond the count', () => {
    const now = 1_000_000;
    const expired = expiredExecutions(
      [
        summary('old', 'completed', now - 61_000),
        summary('new-1', 'completed', now - 1000),
        summary('new-2', 'compensated', now - 2000),
        summary('new-3', 'compensation-failed', now - 3000),
        summary('running-old', 'running', now - 999_000),
        summary('compensating', 'compensating', now - 999_000),
      ],
      policies,
      now,
    );
    expect(expired.sort()).toEqual(['new-3', 'old']);
  });

  it('leaves sagas without a policy here alone (a peer may run them)', () => {
    expect(expiredExecutions([summary('x', 'completed', 0, 'other')], policies, 10 ** 9)).toEqual([]);
  });

  it('keeps none when maxFinished is 0, and picks the same ones on equal times', () => {
    const none = new Map([['health-data', { finishedMs: 10 ** 9, maxFinished: 0 }]]);
    expect(expiredExecutions([summary('a', 'completed', 5)], none, 10)).toEqual(['a']);
    const one = new Map([['health-data', { finishedMs: 10 ** 9, maxFinished: 1 }]]);
    expect(expiredExecutions([summary('b', 'completed', 5), summary('a', 'completed', 5)], one, 10)).toEqual([
      'b',
    ]);
  });
});

describe('file store (append-only log on a real folder)', () => {
  const dirs: string[] = [];
  const stores: FileSagaStore[] = [];
  const logged: { level: string; message: string }[] = [];
  const log = createLogger('test', {
    level: 'debug',
    destination: {
      write: (line: string) => void logged.push(JSON.parse(line) as { level: string; message: string }),
    },
  });

  function open(dir: string, compactAfterBytes?: number): FileSagaStore {
    const store = new FileSagaStore(dir, { log, ...(compactAfterBytes ? { compactAfterBytes } : {}) });
    stores.push(store);
    return store;
  }
  async function reopen(
    store: FileSagaStore,
    dir: string,
    compactAfterBytes?: number,
  ): Promise<FileSagaStore> {
    await store.close();
    stores.splice(stores.indexOf(store), 1);
    return open(dir, compactAfterBytes);
  }
  function folder(): string {
    const dir = mkdtempSync(join(tmpdir(), 'aimesh-log-store-'));
    dirs.push(dir);
    return dir;
  }
  function lastSegment(dir: string): string {
    const segments = readdirSync(join(dir, 'log'))
      .filter((n) => n.endsWith('.wal'))
      .sort();
    return join(dir, 'log', segments.at(-1) as string);
  }

  afterEach(async () => {
    for (const store of stores.splice(0)) await store.close();
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
    logged.length = 0;
  });

  it('creates once per idempotency key, saves with check-and-set, and keeps it all across a reopen', async () => {
    const dir = folder();
    let store = open(dir);
    const first = await store.create(execution('a'));
    expect(first).toMatchObject({ created: true, execution: { id: 'a', version: 1 } });
    const again = await store.create(execution('other-id', { idempotencyKey: 'key-a' }));
    expect(again).toMatchObject({ created: false, execution: { id: 'a' } });
    const saved = await store.save({ ...first.execution, cursor: 1 });
    expect(saved.version).toBe(2);
    await expect(store.save({ ...first.execution, cursor: 5 })).rejects.toBeInstanceOf(ConflictError);
    await expect(store.save(execution('nobody', { version: 1 }))).rejects.toBeInstanceOf(ConflictError);
    await store.save({ ...saved, state: 'completed' });

    store = await reopen(store, dir);
    expect(await store.get('a')).toMatchObject({ cursor: 1, version: 3, state: 'completed' });
    expect(await store.unfinished()).toEqual([]);
    expect((await store.create(execution('b', { idempotencyKey: 'key-a' }))).created).toBe(false);
  });

  it('many concurrent changes share syncs (group commit) and all survive a reopen', async () => {
    const dir = folder();
    let store = open(dir);
    const created = await Promise.all(
      Array.from({ length: 500 }, (_, i) => store.create(execution(`e${i}`))),
    );
    await Promise.all(created.map(({ execution: e }) => store.save({ ...e, cursor: 1 })));
    // 1000 changes, far fewer syncs: concurrent changes went out together.
    expect(store.stats.syncs).toBeLessThan(500);
    store = await reopen(store, dir);
    const all = await store.list();
    expect(all).toHaveLength(500);
    expect(all.every((e) => e.version === 2 && e.cursor === 1)).toBe(true);
    expect(await store.opened).toMatchObject({ executions: 500, records: 1000, discardedBytes: 0 });
  });

  it('a torn last record (a partial write) is cut off on open, never half-applied, and writing goes on', async () => {
    const dir = folder();
    let store = open(dir);
    const { execution: a } = await store.create(execution('a'));
    await store.save({ ...a, cursor: 1 });
    await store.close();
    stores.splice(0);
    const record = encodePut(stored({ ...a, cursor: 2, version: 3 }));
    appendFileSync(lastSegment(dir), record.subarray(0, record.length - 7));
    const tornSize = statSync(lastSegment(dir)).size;

    store = open(dir);
    expect((await store.opened).discardedBytes).toBe(record.length - 7);
    expect(await store.get('a')).toMatchObject({ cursor: 1, version: 2 });
    expect(statSync(lastSegment(dir)).size).toBe(tornSize - (record.length - 7));
    expect(logged.some((l) => l.level === 'warn' && l.message.includes('torn'))).toBe(true);
    await store.save({ ...(await store.get('a'))!, cursor: 3 });
    store = await reopen(store, dir);
    expect(await store.get('a')).toMatchObject({ cursor: 3, version: 3 });
    expect((await store.opened).discardedBytes).toBe(0);
  });

  it('a last record with a bad checksum is ignored: the execution stays at its previous state', async () => {
    const dir = folder();
    let store = open(dir);
    const { execution: a } = await store.create(execution('a'));
    await store.save({ ...a, state: 'completed' });
    await store.close();
    stores.splice(0);
    const file = lastSegment(dir);
    const bytes = readFileSync(file);
    flipByte(bytes, bytes.length - 3);
    writeFileSync(file, bytes);

    store = open(dir);
    expect(await store.get('a')).toMatchObject({ state: 'running', version: 1 });
    expect((await store.unfinished()).map((e) => e.id)).toEqual(['a']);
    expect((await store.opened).discardedBytes).toBeGreaterThan(0);
    store = await reopen(store, dir);
    expect((await store.opened).discardedBytes).toBe(0);
  });

  it('compacts past its bound into a snapshot, drops the old segments, and reopens to the same state', async () => {
    const dir = folder();
    let store = open(dir, 20_000);
    const executions = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => (await store.create(execution(`c${i}`))).execution),
    );
    for (let round = 0; round < 30; round++) {
      for (const [i, e] of executions.entries()) executions[i] = await store.save({ ...e, cursor: round });
    }
    store = await reopen(store, dir, 20_000);
    const files = readdirSync(join(dir, 'log'));
    expect(files.some((f) => f.endsWith('.snapshot'))).toBe(true);
    expect(files.filter((f) => f.endsWith('.wal')).length).toBeLessThanOrEqual(2);
    expect(files.some((f) => f.endsWith('.tmp'))).toBe(false);
    const all = await store.list();
    expect(all).toHaveLength(20);
    expect(all.every((e) => e.cursor === 29 && e.version === 31)).toBe(true);
  });

  it('removes finished executions by retention, durably, and frees their idempotency keys', async () => {
    const dir = folder();
    let store = open(dir);
    const { execution: done } = await store.create(execution('done', { updatedAt: 0 }));
    await store.save({ ...done, state: 'completed' });
    await store.create(execution('live', { updatedAt: 0 }));
    const removed = await store.prune(
      new Map([['health-data', { finishedMs: 1000, maxFinished: 10 }]]),
      5000,
    );
    expect(removed).toBe(1);
    store = await reopen(store, dir);
    expect(await store.get('done')).toBeUndefined();
    expect((await store.list()).map((e) => e.id)).toEqual(['live']);
    expect((await store.create(execution('done-again', { idempotencyKey: 'key-done' }))).created).toBe(true);
  });

  it('carries a folder of the one-file-per-execution layout over into the log, once', async () => {
    const dir = folder();
    mkdirSync(join(dir, 'executions'));
    mkdirSync(join(dir, 'keys'));
    writeFileSync(
      join(dir, 'executions', 'a.json'),
      JSON.stringify(execution('a', { version: 4, cursor: 3 })),
    );
    writeFileSync(join(dir, 'executions', 'b.json.tmp-123'), '{"half":');
    writeFileSync(join(dir, 'keys', 'whatever'), 'a');
    let store = open(dir);
    expect(await store.get('a')).toMatchObject({ version: 4, cursor: 3 });
    expect((await store.create(execution('other', { idempotencyKey: 'key-a' }))).created).toBe(false);
    expect(readdirSync(dir).sort()).toEqual(['log', 'owner.pid']);
    await store.save({ ...(await store.get('a'))!, cursor: 4 });
    store = await reopen(store, dir);
    expect(await store.get('a')).toMatchObject({ version: 5, cursor: 4 });
    expect(await store.list()).toHaveLength(1);
  });

  it('refuses a folder another live process holds', () => {
    const dir = folder();
    writeFileSync(join(dir, 'owner.pid'), String(process.ppid));
    expect(() => open(dir)).toThrow(`is in use by process ${process.ppid}`);
    writeFileSync(join(dir, 'owner.pid'), `${process.ppid} ${processStartTime(process.ppid)}`);
    expect(() => open(dir)).toThrow(`is in use by process ${process.ppid}`);
  });

  it('takes over a lock whose pid now belongs to another process (started at another time)', async () => {
    const dir = folder();
    writeFileSync(join(dir, 'owner.pid'), `${process.ppid} 1`);
    const store = open(dir);
    await store.opened;
    expect(readFileSync(join(dir, 'owner.pid'), 'utf8')).toBe(
      `${process.pid} ${processStartTime(process.pid)}`,
    );
  });

  it('reads the start time from /proc/<pid>/stat even when the command name has spaces and parentheses', () => {
    const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
    expect(parseStartTime(`42 (a (b) c) ${fields.join(' ')}`)).toBe('22');
  });
});
