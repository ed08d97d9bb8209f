/**
 * The Consul store as it was before transactions (commit 8def6dc), kept only so the saga
 * benchmark can measure before and after in the same run. Not used by the sidecar.
 */
/**
 * The cluster store: executions in Consul KV, written with check-and-set on their
 * ModifyIndex, idempotency keys created only if absent, and one lock per execution held
 * by this orchestrator's Consul session. When an orchestrator dies its session lapses
 * (TTL), its locks are released, and a peer claims and continues its executions.
 */
import { createHash } from 'node:crypto';
import type { ConsulClient } from '../../sidecar/discovery/index.js';
import type { Execution } from '../../sidecar/saga/machine.js';
import { ConflictError, type SagaStore } from '../../sidecar/saga/store.js';

export interface ConsulStoreOptions {
  prefix?: string;
  /** Session TTL: how long a dead orchestrator's executions wait before a peer takes them. */
  sessionTtl?: string;
  owner: string;
}

export class BaselineConsulSagaStore implements SagaStore {
  private readonly prefix: string;
  private session?: string;
  private renewTimer?: NodeJS.Timeout;
  private readonly modifyIndex = new Map<string, number>();

  constructor(
    private readonly client: ConsulClient,
    private readonly options: ConsulStoreOptions,
  ) {
    this.prefix = (options.prefix ?? 'aimesh/sagas').replace(/\/$/, '');
  }

  async create(execution: Execution): Promise<{ execution: Execution; created: boolean }> {
    const keyPath = `${this.prefix}/keys/${keyName(execution.saga, execution.idempotencyKey)}`;
    const saved = { ...execution, version: 1 };
    if (!(await this.client.kvPut(keyPath, execution.id, { cas: 0 }))) {
      const existingId = (await this.client.kvGet(keyPath))?.value ?? '';
      const existing = await this.get(existingId);
      if (existing) return { execution: existing, created: false };
      throw new ConflictError(
        `idempotency key ${execution.idempotencyKey} is being used by a start in progress; retry`,
      );
    }
    if (!(await this.client.kvPut(this.executionKey(execution.id), JSON.stringify(saved), { cas: 0 }))) {
      throw new ConflictError(`execution ${execution.id} already exists`);
    }
    await this.get(execution.id);
    return { execution: saved, created: true };
  }

  async save(execution: Execution): Promise<Execution> {
    const index =
      this.modifyIndex.get(execution.id) ??
      (await this.client.kvGet(this.executionKey(execution.id)))?.modifyIndex;
    const saved = { ...execution, version: execution.version + 1 };
    if (
      index === undefined ||
      !(await this.client.kvPut(this.executionKey(execution.id), JSON.stringify(saved), { cas: index }))
    ) {
      this.modifyIndex.delete(execution.id);
      throw new ConflictError(
        `execution ${execution.id} changed in Consul since version ${execution.version}`,
      );
    }
    await this.get(execution.id);
    return saved;
  }

  async get(id: string): Promise<Execution | undefined> {
    if (!id) return undefined;
    const entry = await this.client.kvGet(this.executionKey(id));
    if (!entry) return undefined;
    this.modifyIndex.set(id, entry.modifyIndex);
    return JSON.parse(entry.value) as Execution;
  }

  async list(): Promise<Execution[]> {
    const entries = await this.client.kvList(`${this.prefix}/executions/`);
    return entries.map((e) => {
      this.modifyIndex.set(e.key.slice(e.key.lastIndexOf('/') + 1), e.modifyIndex);
      return JSON.parse(e.value) as Execution;
    });
  }

  async unfinished(): Promise<Execution[]> {
    return (await this.list()).filter(
      (e) => !['completed', 'compensated', 'compensation-failed'].includes(e.state),
    );
  }

  /** The old store kept finished executions forever. */
  async prune(): Promise<number> {
    return 0;
  }

  async claim(id: string): Promise<boolean> {
    const session = await this.ensureSession();
    return this.client.kvPut(`${this.prefix}/locks/${id}`, this.options.owner, { acquire: session });
  }

  async release(id: string): Promise<void> {
    if (!this.session) return;
    await this.client.kvPut(`${this.prefix}/locks/${id}`, this.options.owner, { release: this.session });
  }

  async close(): Promise<void> {
    clearInterval(this.renewTimer);
    if (this.session)
      await this.client
        .sessionDestroy(this.session)
        .catch((error: unknown) => console.error('baseline: session destroy failed', error));
    this.session = undefined;
  }

  private async ensureSession(): Promise<string> {
    if (this.session) return this.session;
    const ttl = this.options.sessionTtl ?? '10s';
    this.session = await this.client.sessionCreate(`aimesh-saga-${this.options.owner}`, ttl);
    const everyMs = Math.max(1000, (Number.parseInt(ttl, 10) * 1000) / 3);
    this.renewTimer = setInterval(() => {
      const session = this.session;
      if (!session) return;
      void this.client.sessionRenew(session).then(
        (alive) => {
          // A lapsed session lost its locks: start a new one; executions are claimed again.
          if (!alive && this.session === session) this.session = undefined;
        },
        (error: unknown) => console.error('baseline: session renew failed', error),
      );
    }, everyMs);
    this.renewTimer.unref();
    return this.session;
  }

  private executionKey(id: string): string {
    return `${this.prefix}/executions/${id}`;
  }
}

function keyName(saga: string, key: string): string {
  return createHash('sha256').update(`${saga}\n${key}`).digest('hex');
}
