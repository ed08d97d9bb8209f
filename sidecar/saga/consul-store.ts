/**
 * The cluster store: executions in Consul KV, written with check-and-set on their
 * ModifyIndex, idempotency keys created only if absent, and one lock per execution held
 * by this orchestrator's Consul session. When an orchestrator dies its session lapses
 * (TTL), its locks are released, and a peer claims and continues its executions.
 *
 * Finished executions move from executions/ to finished/ in the same transaction as their
 * last save, so recovery (which runs every few seconds) reads only the unfinished ones.
 *
 * Writes go through Consul transactions: concurrent creates and saves are grouped into one
 * /v1/txn of at most 64 operations (one Raft write for all of them). A create is one unit
 * of the transaction (idempotency key, execution and its lock together); a unit whose check
 * fails is answered alone and the rest are sent again, so one conflict does not fail others.
 */
import { createHash } from 'node:crypto';
import { AimeshError } from '../../lib/errors/index.js';
import { createLogger, type Logger } from '../../lib/log/index.js';
import { isPermissionDenied, type ConsulTxnOp } from '../discovery/consul-client.js';
import type { ConsulClient } from '../discovery/index.js';
import { TERMINAL_STATES, type Execution } from './machine.js';
import { expiredExecutions, type RetentionPolicies } from './retention.js';
import { ConflictError, type SagaStore } from './store.js';

export interface ConsulStoreOptions {
  prefix?: string;
  /**
   * Session TTL. Consul invalidates a session up to twice its TTL after the last renewal,
   * so a dead orchestrator's executions are taken over within about 2 × TTL plus the
   * recovery interval. Consul refuses TTLs under its servers' `session_ttl_min` (10s by default).
   */
  sessionTtl?: string;
  owner: string;
  log?: Logger;
}

/** Consul's limit is 128 operations per transaction; half keeps each Raft entry small. */
const MAX_TXN_OPS = 64;
/** Values in one transaction stay well under Consul's 512 KiB request limit. */
const MAX_TXN_BYTES = 256 * 1024;
/** Transactions in flight at once; more changes wait and join the next ones. */
const MAX_TXN_IN_FLIGHT = 4;

export class ConsulSagaStore implements SagaStore {
  private readonly prefix: string;
  private session?: Promise<string>;
  private renewTimer?: NodeJS.Timeout;
  /** The last write seen of each unfinished execution: its version and Consul's ModifyIndex. */
  private readonly known = new Map<string, { version: number; modifyIndex: number }>();
  /** Locks this store's current session took in a create; claiming them again needs no call. */
  private readonly held = new Set<string>();
  private readonly batcher: TxnBatcher;
  private readonly log: Logger;

  constructor(
    private readonly client: ConsulClient,
    private readonly options: ConsulStoreOptions,
  ) {
    this.prefix = (options.prefix ?? 'aimesh/sagas').replace(/\/$/, '');
    this.batcher = new TxnBatcher(client, (error) => this.refused(error));
    this.log = options.log ?? createLogger('saga-store');
  }

  async create(execution: Execution): Promise<{ execution: Execution; created: boolean }> {
    const keyPath = this.idempotencyKeyPath(execution);
    const saved = { ...execution, version: 1 };
    const session = await this.ensureSession();
    const outcome = await this.batcher.submit([
      kvOp('cas', keyPath, execution.id, 0),
      kvOp('cas', this.executionKey(execution.id), JSON.stringify(saved), 0),
      {
        KV: {
          Verb: 'lock',
          Key: this.lockKey(execution.id),
          Value: b64(this.options.owner),
          Session: session,
        },
      },
    ]);
    if (outcome.ok) {
      this.known.set(execution.id, {
        version: 1,
        modifyIndex: outcome.modifyIndex(this.executionKey(execution.id)),
      });
      this.held.add(execution.id);
      return { execution: saved, created: true };
    }
    const existingId = (await this.client.kvGet(keyPath))?.value ?? '';
    const existing = await this.get(existingId);
    if (existing) return { execution: existing, created: false };
    throw new ConflictError(
      `could not create execution ${execution.id} for idempotency key ${execution.idempotencyKey}: ${outcome.errors.join('; ')}; retry`,
    );
  }

  async save(execution: Execution): Promise<Execution> {
    const key = this.executionKey(execution.id);
    let known = this.known.get(execution.id);
    if (known?.version !== execution.version) {
      const entry = await this.client.kvGet(key);
      known = entry && {
        version: (JSON.parse(entry.value) as Execution).version,
        modifyIndex: entry.modifyIndex,
      };
    }
    const index = known?.version === execution.version ? known.modifyIndex : undefined;
    const saved = { ...execution, version: execution.version + 1 };
    const finished = TERMINAL_STATES.includes(saved.state);
    const ops: ConsulTxnOp[] = finished
      ? [
          { KV: { Verb: 'delete-cas', Key: key, Index: index } },
          { KV: { Verb: 'set', Key: this.finishedKey(execution.id), Value: b64(JSON.stringify(saved)) } },
        ]
      : [kvOp('cas', key, JSON.stringify(saved), index ?? 0)];
    const outcome = index === undefined ? undefined : await this.batcher.submit(ops);
    if (!outcome?.ok || finished) this.known.delete(execution.id);
    if (!outcome?.ok)
      throw new ConflictError(
        `execution ${execution.id} changed in Consul since version ${execution.version}`,
      );
    if (!finished)
      this.known.set(execution.id, { version: saved.version, modifyIndex: outcome.modifyIndex(key) });
    return saved;
  }

  async get(id: string): Promise<Execution | undefined> {
    if (!id) return undefined;
    const entry = await this.client.kvGet(this.executionKey(id));
    if (entry) {
      const execution = JSON.parse(entry.value) as Execution;
      this.known.set(id, { version: execution.version, modifyIndex: entry.modifyIndex });
      return execution;
    }
    const finished = await this.client.kvGet(this.finishedKey(id));
    return finished && (JSON.parse(finished.value) as Execution);
  }

  async list(): Promise<Execution[]> {
    const [unfinished, finished] = await Promise.all([
      this.unfinished(),
      this.client.kvList(`${this.prefix}/finished/`),
    ]);
    return [...unfinished, ...finished.map((e) => JSON.parse(e.value) as Execution)];
  }

  async unfinished(): Promise<Execution[]> {
    const entries = await this.client.kvList(`${this.prefix}/executions/`);
    const executions = entries.map((e) => {
      const execution = JSON.parse(e.value) as Execution;
      this.known.set(execution.id, { version: execution.version, modifyIndex: e.modifyIndex });
      return execution;
    });
    // Forget what a peer finished, so the cache stays the size of the unfinished set. An
    // entry forgotten too eagerly only costs the next save one GET.
    const listed = new Set(executions.map((e) => e.id));
    for (const id of this.known.keys()) if (!listed.has(id)) this.known.delete(id);
    return executions;
  }

  /** Removes each expired execution with its idempotency key and lock, unless it changed meanwhile. */
  async prune(policies: RetentionPolicies, nowMs: number): Promise<number> {
    const entries = (await this.client.kvList(`${this.prefix}/finished/`)).map((e) => ({
      ...e,
      execution: JSON.parse(e.value) as Execution,
    }));
    const byId = new Map(entries.map((e) => [e.execution.id, e]));
    const expired = expiredExecutions(
      entries.map((e) => e.execution),
      policies,
      nowMs,
    );
    const outcomes = await Promise.all(
      expired.map((id) => {
        const { key, modifyIndex, execution } = byId.get(id) as (typeof entries)[number];
        return this.batcher.submit([
          { KV: { Verb: 'delete-cas', Key: key, Index: modifyIndex } },
          { KV: { Verb: 'delete', Key: this.idempotencyKeyPath(execution) } },
          { KV: { Verb: 'delete', Key: this.lockKey(id) } },
        ]);
      }),
    );
    return outcomes.filter((o) => o.ok).length;
  }

  async claim(id: string): Promise<boolean> {
    if (this.held.has(id)) return true;
    const session = await this.ensureSession();
    const acquired = await this.client
      .kvPut(this.lockKey(id), this.options.owner, { acquire: session })
      .catch((error: unknown) => {
        throw this.refused(error);
      });
    if (acquired) this.held.add(id);
    return acquired;
  }

  async release(id: string): Promise<void> {
    this.held.delete(id);
    if (!this.session) return;
    const session = await this.session;
    const outcome = await this.batcher.submit([
      { KV: { Verb: 'unlock', Key: this.lockKey(id), Session: session } },
    ]);
    // Not holding it (the session lapsed and a peer took it) is the only way this fails.
    if (!outcome.ok)
      this.log.warn('saga lock was not ours to release', { execution: id, errors: outcome.errors });
  }

  async close(): Promise<void> {
    clearInterval(this.renewTimer);
    // Changes already submitted (a release among them) go out under the session they need.
    await this.batcher.idle();
    const session = this.session;
    this.session = undefined;
    if (!session) return;
    try {
      await this.client.sessionDestroy(await session);
    } catch (error) {
      // The session lapses by its TTL anyway; peers then take the unfinished executions.
      this.log.warn('could not destroy the saga session on close', { error: String(error) });
    }
  }

  private ensureSession(): Promise<string> {
    // One creation for all concurrent callers: each session would hold its own locks.
    this.session ??= this.createSession();
    return this.session;
  }

  private async createSession(): Promise<string> {
    const ttl = this.options.sessionTtl ?? '10s';
    // LockDelay 0: a peer may take a dead orchestrator's locks as soon as its session
    // lapses. The CAS on every save is what keeps two writers from both succeeding.
    const created = this.client.sessionCreate(`aimesh-saga-${this.options.owner}`, ttl, '0s');
    const id = await created.catch((error: unknown) => {
      this.session = undefined;
      throw this.refused(error);
    });
    this.held.clear();
    const everyMs = Math.max(1000, (Number.parseInt(ttl, 10) * 1000) / 3);
    clearInterval(this.renewTimer);
    this.renewTimer = setInterval(() => {
      void this.client.sessionRenew(id).then(
        (alive) => {
          // A lapsed session lost its locks: start a new one; executions are claimed again.
          if (!alive && this.session) {
            this.log.warn('saga session lapsed; its executions are claimed again', { session: id });
            this.session = undefined;
            this.held.clear();
          }
        },
        (error: unknown) =>
          this.log.warn('renewing the saga session failed', { session: id, error: String(error) }),
      );
    }, everyMs);
    this.renewTimer.unref();
    return id;
  }

  /**
   * A refusal of the ACL token, said as what the operator must grant: without it the
   * caller would see a bare "Permission denied", or for a transaction a conflict to retry.
   */
  private refused(error: unknown): unknown {
    if (!isPermissionDenied(error)) return error;
    return new AimeshError(
      'dependency.failed',
      `the Consul ACL token may not keep saga executions under "${this.prefix}/": ${(error as Error).message}. ` +
        `The saga store needs key_prefix "${this.prefix}/" { policy = "write" } and ` +
        `session_prefix "" { policy = "write" } (README, Sagas)`,
      { cause: error, details: { consulStatus: 403 } },
    );
  }

  private executionKey(id: string): string {
    return `${this.prefix}/executions/${id}`;
  }

  private finishedKey(id: string): string {
    return `${this.prefix}/finished/${id}`;
  }

  private lockKey(id: string): string {
    return `${this.prefix}/locks/${id}`;
  }

  private idempotencyKeyPath(execution: Execution): string {
    return `${this.prefix}/keys/${keyName(execution.saga, execution.idempotencyKey)}`;
  }
}

/** A unit's answer: the new ModifyIndex of each key it wrote, or why it was refused. */
type UnitOutcome = { ok: true; modifyIndex: (key: string) => number } | { ok: false; errors: string[] };

interface Unit {
  ops: ConsulTxnOp[];
  bytes: number;
  resolve: (outcome: UnitOutcome) => void;
  reject: (error: Error) => void;
}

/** Groups units of operations from concurrent callers into transactions. */
class TxnBatcher {
  private queue: Unit[] = [];
  private inFlight = 0;

  constructor(
    private readonly client: ConsulClient,
    /** Turns a permission refusal into the store's error that says what to grant. */
    private readonly refused: (error: unknown) => unknown,
  ) {}

  submit(ops: ConsulTxnOp[]): Promise<UnitOutcome> {
    const bytes = ops.reduce((sum, op) => sum + (op.KV.Value?.length ?? 0) + op.KV.Key.length, 0);
    return new Promise((resolve, reject) => {
      this.queue.push({ ops, bytes, resolve, reject });
      this.send();
    });
  }

  /** Resolves once nothing is queued or in flight. */
  async idle(): Promise<void> {
    while (this.inFlight > 0 || this.queue.length > 0) await new Promise((resolve) => setTimeout(resolve, 5));
  }

  private send(): void {
    while (this.inFlight < MAX_TXN_IN_FLIGHT && this.queue.length > 0) {
      const batch: Unit[] = [];
      let ops = 0;
      let bytes = 0;
      while (this.queue.length > 0) {
        const next = this.queue[0] as Unit;
        if (batch.length > 0 && (ops + next.ops.length > MAX_TXN_OPS || bytes + next.bytes > MAX_TXN_BYTES))
          break;
        batch.push(this.queue.shift() as Unit);
        ops += next.ops.length;
        bytes += next.bytes;
      }
      this.inFlight++;
      void this.apply(batch).finally(() => {
        this.inFlight--;
        this.send();
      });
    }
  }

  private async apply(batch: Unit[]): Promise<void> {
    let result;
    try {
      result = await this.client.txn(batch.flatMap((u) => u.ops));
    } catch (error) {
      for (const unit of batch) unit.reject(this.refused(error) as Error);
      return;
    }
    // A permission is the token's, not one unit's: every unit of the batch is refused alike.
    const denied = result.ok ? undefined : result.errors.find((e) => /permission denied/i.test(e.what));
    if (denied) {
      const error = this.refused(
        new AimeshError('dependency.failed', `Consul PUT /v1/txn: ${denied.what}`, {
          details: { consulStatus: 403 },
        }),
      );
      for (const unit of batch) unit.reject(error as Error);
      return;
    }
    // Deletes return no entry, so results are matched to units by key, not by position.
    const written = new Map(result.ok ? result.results.map((r) => [r.key, r.modifyIndex]) : []);
    const modifyIndex = (key: string) => written.get(key) ?? 0;
    let offset = 0;
    const retry: Unit[] = [];
    for (const unit of batch) {
      const from = offset;
      offset += unit.ops.length;
      if (result.ok) {
        unit.resolve({ ok: true, modifyIndex });
        continue;
      }
      const errors = result.errors.filter((e) => e.opIndex >= from && e.opIndex < offset).map((e) => e.what);
      if (errors.length > 0) unit.resolve({ ok: false, errors });
      else retry.push(unit);
    }
    if (!result.ok && retry.length === batch.length) {
      // Consul rolled back without naming an operation: nothing to single out, so fail all.
      const error = new Error(`Consul transaction rolled back: ${JSON.stringify(result.errors)}`);
      for (const unit of retry) unit.reject(error);
      return;
    }
    // Units that only failed alongside another one's conflict go again, ahead of newer ones.
    this.queue.unshift(...retry);
  }
}

function kvOp(verb: 'cas', key: string, value: string, index: number): ConsulTxnOp {
  return { KV: { Verb: verb, Key: key, Value: b64(value), Index: index } };
}

function b64(value: string): string {
  return Buffer.from(value, 'utf8').toString('base64');
}

function keyName(saga: string, key: string): string {
  return createHash('sha256').update(`${saga}\n${key}`).digest('hex');
}
