import type { Execution } from './machine.js';
import type { RetentionPolicies } from './retention.js';

/** Where executions live. Every state change is saved here before it is acted on. */
export interface SagaStore {
  /**
   * Saves a new execution unless one with the same saga and idempotency key exists; then
   * returns that one instead (a repeated start does not run twice).
   */
  create(execution: Execution): Promise<{ execution: Execution; created: boolean }>;
  /** Saves a changed execution if nobody else did since `execution.version`; bumps the version. */
  save(execution: Execution): Promise<Execution>;
  get(id: string): Promise<Execution | undefined>;
  list(): Promise<Execution[]>;
  /** Executions not yet finished: what recovery looks at, without reading every finished one. */
  unfinished(): Promise<Execution[]>;
  /**
   * Removes finished executions past their saga's retention (see retention.ts); returns how
   * many. Sagas without a policy are left alone.
   */
  prune(policies: RetentionPolicies, nowMs: number): Promise<number>;
  /**
   * Takes ownership of an execution, so only one orchestrator runs it. Returns false when a
   * live peer owns it. Ownership lapses when its holder dies.
   */
  claim(id: string): Promise<boolean>;
  release(id: string): Promise<void>;
  close(): Promise<void>;
}

export class ConflictError extends Error {}
