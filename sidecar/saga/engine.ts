/**
 * The saga engine: starts executions, runs each one step by step through the state
 * machine, saves every state change before acting on it, and recovers unfinished
 * executions (its own after a restart, a dead peer's in a cluster).
 */
import { context, SpanKind, SpanStatusCode, trace, TraceFlags, type Tracer } from '@opentelemetry/api';
import { createHash, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { renderStepRequest, TemplateError, type SagaSpec } from '../../api/index.js';
import { AimeshError } from '../../lib/errors/index.js';
import type { Logger } from '../../lib/log/index.js';
import type { CompiledSaga, StepTimeouts } from '../config/compile.js';
import type { StepCaller } from './caller.js';
import {
  abort,
  nextAction,
  recordOutcome,
  startExecution,
  TERMINAL_STATES,
  type Action,
  type Execution,
  type Outcome,
} from './machine.js';
import { retentionPolicies } from './retention.js';
import { ConflictError, type SagaStore } from './store.js';

const STUCK_AFTER_MS = 5 * 60_000;

export interface EngineOptions {
  /** Saga definitions by name, compiled on load (config/compile.ts). */
  definitions: Map<string, CompiledSaga>;
  store: SagaStore;
  call: StepCaller;
  log: Logger;
  registry: Registry;
  /** How often to look for unfinished executions nobody runs (a dead peer's). */
  recoverEveryMs?: number;
  /** How often to remove finished executions past their saga's retention. */
  pruneEveryMs?: number;
  /** Spans per step call; the no-op tracer when tracing is off. */
  tracer?: Tracer;
}

export class SagaEngine {
  private readonly events = new EventEmitter();
  private readonly running = new Map<string, { cancel?: string }>();
  private readonly active = new Map<string, number>();
  private readonly waiting = new Map<string, Execution[]>();
  private recoverTimer?: NodeJS.Timeout;
  private pruneTimer?: NodeJS.Timeout;
  private stopped = false;
  private recoveryFailing = false;
  private readonly metrics;

  constructor(private readonly options: EngineOptions) {
    this.events.setMaxListeners(0);
    const registers = [options.registry];
    this.metrics = {
      executions: new Counter({
        name: 'aimesh_saga_executions_total',
        help: 'Executions that reached a terminal state, by saga and state.',
        labelNames: ['saga', 'state'] as const,
        registers,
      }),
      running: new Gauge({
        name: 'aimesh_saga_executions_running',
        help: 'Executions this orchestrator is running now, by saga.',
        labelNames: ['saga'] as const,
        registers,
      }),
      stepDuration: new Histogram({
        name: 'aimesh_saga_step_duration_seconds',
        help: 'Step call latency, by saga, step and phase.',
        labelNames: ['saga', 'step', 'phase'] as const,
        buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
        registers,
      }),
      compensations: new Counter({
        name: 'aimesh_saga_compensations_total',
        help: 'Compensation calls that succeeded, by saga and step.',
        labelNames: ['saga', 'step'] as const,
        registers,
      }),
      compensationFailed: new Counter({
        name: 'aimesh_saga_compensation_failed_total',
        help: 'Executions stopped because a compensation could not succeed: alert on this.',
        labelNames: ['saga'] as const,
        registers,
        // Each saga's series is scraped at 0 before its first failure: a series born at 1
        // shows no increase to Prometheus, so the alert would miss that first failure.
        collect: () => {
          for (const saga of this.options.definitions.keys())
            this.metrics.compensationFailed.inc({ saga }, 0);
        },
      }),
      // Computed at scrape time from the store: executions that have not changed for a while.
      stuck: new Gauge({
        name: 'aimesh_saga_executions_stuck',
        help: 'Unfinished executions with no state change for over 5 minutes (retrying forward after the pivot, or waiting on a step), by saga.',
        labelNames: ['saga'] as const,
        registers,
        collect: async () => {
          const now = Date.now();
          const counts = new Map<string, number>();
          for (const saga of this.options.definitions.keys()) counts.set(saga, 0);
          let executions: Execution[];
          try {
            executions = await this.options.store.unfinished();
          } catch (error) {
            // The gauge keeps its last values; the scrape still succeeds.
            this.options.log.warn('cannot count stuck executions: the store did not answer', { error });
            return;
          }
          for (const execution of executions) {
            if (!isTerminal(execution) && now - execution.updatedAt > STUCK_AFTER_MS)
              counts.set(execution.saga, (counts.get(execution.saga) ?? 0) + 1);
          }
          for (const [saga, count] of counts) this.metrics.stuck.set({ saga }, count);
        },
      }),
      pruned: new Counter({
        name: 'aimesh_saga_executions_removed_total',
        help: 'Finished executions removed from the store by their saga retention.',
        registers,
      }),
      recoveryErrors: new Counter({
        name: 'aimesh_saga_recovery_errors_total',
        help: 'Rounds of the recovery loop that failed (the store did not answer).',
        registers,
      }),
      recovered: new Counter({
        name: 'aimesh_saga_recovered_total',
        help: 'Unfinished executions taken over after a restart or from a dead peer.',
        labelNames: ['saga'] as const,
        registers,
      }),
    };
  }

  /** Resumes unfinished executions now, then keeps looking for orphaned ones. */
  async startRecovery(): Promise<void> {
    await this.recover();
    this.recoverTimer = setInterval(
      () =>
        void this.recover().then(
          () => this.recoveryFailing && this.recoveryRecovered(),
          (error: unknown) => this.recoveryFailed(error),
        ),
      this.options.recoverEveryMs ?? 2000,
    );
    this.recoverTimer.unref();
    this.pruneTimer = setInterval(() => {
      // Read each time: a config reload may change the definitions.
      void this.options.store.prune(retentionPolicies(specsOf(this.options.definitions)), Date.now()).then(
        (removed) => {
          if (removed > 0) this.metrics.pruned.inc(removed);
        },
        (error: unknown) => this.options.log.warn('removing finished executions failed', { error }),
      );
    }, this.options.pruneEveryMs ?? 60_000);
    this.pruneTimer.unref();
  }

  async start(
    saga: string,
    input: unknown,
    idempotencyKey: string,
  ): Promise<{ execution: Execution; created: boolean }> {
    const spec = this.options.definitions.get(saga)?.spec;
    if (!spec) {
      const known = [...this.options.definitions.keys()].join(', ') || 'none';
      throw new AimeshError('input.not-found', `no saga "${saga}" on this orchestrator (it runs: ${known})`);
    }
    if (!idempotencyKey)
      throw new AimeshError(
        'input.invalid',
        'idempotencyKey is required: a repeated start with the same key returns the same execution',
      );
    if (input === null || typeof input !== 'object' || Array.isArray(input)) {
      throw new AimeshError('input.invalid', 'input must be a JSON object');
    }
    const fresh = startExecution(spec, saga, randomUUID(), idempotencyKey, input, Date.now());
    const result = await this.options.store.create(fresh).catch((error: unknown) => {
      // A concurrent start with the same key: the caller retries and gets that execution.
      if (error instanceof ConflictError)
        throw new AimeshError('state.conflict', error.message, { cause: error, details: { saga } });
      throw error;
    });
    if (result.created && (await this.options.store.claim(result.execution.id)))
      this.schedule(result.execution);
    return result;
  }

  async get(id: string): Promise<Execution> {
    const execution = await this.options.store.get(id);
    if (!execution) throw new AimeshError('input.not-found', `no execution "${id}"`);
    return execution;
  }

  async list(filter: { saga?: string; state?: string }): Promise<Execution[]> {
    return (await this.options.store.list()).filter(
      (e) => (!filter.saga || e.saga === filter.saga) && (!filter.state || e.state === filter.state),
    );
  }

  /** Asks the execution to compensate (before its pivot only). */
  async cancel(id: string): Promise<Execution> {
    const execution = await this.get(id);
    const spec = this.options.definitions.get(execution.saga)?.spec;
    if (!spec) throw new AimeshError('input.not-found', `no saga "${execution.saga}" on this orchestrator`);
    const refused = abort(spec, execution, 'cancelled', Date.now());
    if (typeof refused === 'string') throw new AimeshError('input.conflict', `cannot cancel: ${refused}`);
    const local = this.running.get(id);
    if (!local)
      throw new AimeshError(
        'input.conflict',
        'the execution is run by another orchestrator; cancel it there',
      );
    local.cancel = 'cancelled';
    return this.waitFor(id, 60_000, (e) => e.state !== 'running');
  }

  /** Resolves once the execution is terminal (or `until` holds), or when the time is up. */
  async waitFor(
    id: string,
    timeoutMs: number,
    until: (e: Execution) => boolean = isTerminal,
  ): Promise<Execution> {
    const current = await this.get(id);
    if (until(current)) return current;
    return new Promise((resolve, reject) => {
      const onChange = (execution: Execution) => {
        if (!until(execution)) return;
        cleanup();
        resolve(execution);
      };
      const timer = setTimeout(() => {
        cleanup();
        // The store failing here is the caller's error, not an unhandled rejection.
        this.get(id).then(resolve, reject);
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.events.off(id, onChange);
      };
      this.events.on(id, onChange);
    });
  }

  onChange(id: string, listener: (execution: Execution) => void): () => void {
    this.events.on(id, listener);
    return () => this.events.off(id, listener);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.recoverTimer);
    clearInterval(this.pruneTimer);
  }

  private async recover(): Promise<void> {
    if (this.stopped) return;
    for (const execution of await this.options.store.unfinished()) {
      if (isTerminal(execution) || this.running.has(execution.id) || this.isWaiting(execution.id)) continue;
      if (!this.options.definitions.has(execution.saga)) continue;
      if (!(await this.options.store.claim(execution.id))) continue;
      // Read it again under the lock: the previous owner may have written since the list.
      const fresh = await this.options.store.get(execution.id);
      if (!fresh || isTerminal(fresh)) {
        await this.options.store.release(execution.id);
        continue;
      }
      this.metrics.recovered.inc({ saga: fresh.saga });
      this.options.log.info('resuming execution', {
        execution: fresh.id,
        saga: fresh.saga,
        state: fresh.state,
      });
      this.schedule(fresh);
    }
  }

  /** Runs now, or queues behind the saga's concurrency limit. */
  private schedule(execution: Execution): void {
    const { spec } = this.options.definitions.get(execution.saga) as CompiledSaga;
    const active = this.active.get(execution.saga) ?? 0;
    if (active >= spec.concurrencyLimit) {
      this.waiting.set(execution.saga, [...(this.waiting.get(execution.saga) ?? []), execution]);
      return;
    }
    this.active.set(execution.saga, active + 1);
    this.running.set(execution.id, {});
    this.metrics.running.inc({ saga: execution.saga });
    void this.run(execution)
      .catch((error: unknown) =>
        this.options.log.error('execution stopped; recovery will resume it', {
          execution: execution.id,
          error,
        }),
      )
      .finally(() => {
        this.running.delete(execution.id);
        this.metrics.running.dec({ saga: execution.saga });
        this.active.set(execution.saga, (this.active.get(execution.saga) ?? 1) - 1);
        const next = this.waiting.get(execution.saga)?.shift();
        if (next && !this.stopped) this.schedule(next);
      });
  }

  private async run(initial: Execution): Promise<void> {
    const saga = this.options.definitions.get(initial.saga) as CompiledSaga;
    const spec = saga.spec;
    let execution = initial;
    try {
      while (!this.stopped) {
        const local = this.running.get(execution.id);
        const reason = local?.cancel ?? (Date.now() > execution.deadline ? 'timed out' : undefined);
        if (reason && execution.state === 'running' && !execution.pivotPassed) {
          if (local) delete local.cancel;
          const aborted = abort(spec, execution, reason, Date.now());
          if (typeof aborted !== 'string') execution = await this.save(aborted);
        }
        const action = nextAction(spec, execution);
        if (action.kind === 'finished') break;
        const wait = action.notBefore - Date.now();
        if (wait > 0) await sleep(Math.min(wait, Math.max(1, execution.deadline - Date.now()) + 1));
        if (action.notBefore > Date.now()) continue;
        const outcome = await this.perform(saga, execution, action);
        execution = await this.save(recordOutcome(spec, execution, action, outcome, Date.now()));
      }
    } catch (error) {
      if (error instanceof ConflictError) {
        this.options.log.warn('another orchestrator changed this execution; leaving it to them', {
          execution: execution.id,
        });
        return;
      }
      throw error;
    }
    if (isTerminal(execution)) {
      this.metrics.executions.inc({ saga: execution.saga, state: execution.state });
      if (execution.state === 'compensation-failed') {
        this.metrics.compensationFailed.inc({ saga: execution.saga });
        this.options.log.error('compensation failed: the execution needs a person', {
          execution: execution.id,
          saga: execution.saga,
          reason: execution.reason,
        });
      }
      await this.options.store.release(execution.id).catch((error: unknown) =>
        // The lock lapses with the session; a peer will find the execution terminal.
        this.options.log.warn('cannot release a finished execution', { execution: execution.id, error }),
      );
    }
  }

  private async perform(
    saga: CompiledSaga,
    execution: Execution,
    action: Extract<Action, { kind: 'call' }>,
  ): Promise<Outcome> {
    const step = saga.spec.steps[action.step] as SagaSpec['steps'][number];
    const call = action.phase === 'action' ? step.action : step.compensation;
    if (!call)
      return {
        ok: false,
        failure: { error: 'template' },
        message: `step ${step.name} has no ${action.phase}`,
      };
    const context = {
      input: execution.input,
      execution: {
        id: execution.id,
        saga: execution.saga,
        startedAt: new Date(execution.startedAt).toISOString(),
      },
      steps: Object.fromEntries(
        execution.steps
          .filter((s) => s.response)
          .map((s) => [s.name, { response: s.response as NonNullable<typeof s.response> }]),
      ),
    };
    let rendered: ReturnType<typeof renderStepRequest>;
    try {
      rendered = renderStepRequest(call, context, `step "${step.name}" ${action.phase}`);
    } catch (error) {
      if (!(error instanceof TemplateError)) throw error;
      return { ok: false, failure: { error: 'template' }, message: error.message };
    }
    const started = Date.now();
    const tracer = this.options.tracer ?? trace.getTracer('aimesh-sidecar');
    const span = tracer.startSpan(
      `saga ${execution.saga} ${step.name} ${action.phase}`,
      {
        kind: SpanKind.CLIENT,
        attributes: {
          'aimesh.saga': execution.saga,
          'aimesh.execution': execution.id,
          'aimesh.step': step.name,
          'aimesh.phase': action.phase,
          'aimesh.attempt': action.attempt,
          'server.address': call.service,
        },
      },
      executionTraceContext(execution.id),
    );
    const spanContext = span.spanContext();
    const traceparent: Record<string, string> = trace.isSpanContextValid(spanContext)
      ? { traceparent: `00-${spanContext.traceId}-${spanContext.spanId}-0${spanContext.traceFlags}` }
      : {};
    const outcome = await this.options.call({
      service: call.service,
      method: call.method,
      ...rendered,
      headers: { ...rendered.headers, ...traceparent },
      timeoutMs: (saga.stepTimeoutsMs[action.step] as StepTimeouts)[action.phase] as number,
      idempotencyKey: action.idempotencyKey,
    });
    if (outcome.ok) span.setAttribute('http.response.status_code', outcome.response.status);
    else span.setStatus({ code: SpanStatusCode.ERROR, message: outcome.message });
    span.end();
    this.metrics.stepDuration.observe(
      { saga: execution.saga, step: step.name, phase: action.phase },
      (Date.now() - started) / 1000,
    );
    if (outcome.ok && action.phase === 'compensation')
      this.metrics.compensations.inc({ saga: execution.saga, step: step.name });
    return outcome;
  }

  private async save(execution: Execution): Promise<Execution> {
    const saved = await this.options.store.save(execution);
    this.events.emit(saved.id, saved);
    return saved;
  }

  /**
   * The recovery loop runs every few seconds: a failure is counted every time, and logged
   * when it starts and when it ends, so a store that is down for an hour is one log line
   * and a rising counter, not silence and not a line every 2 s.
   */
  private recoveryFailed(error: unknown): void {
    this.metrics.recoveryErrors.inc();
    if (this.recoveryFailing) return;
    this.recoveryFailing = true;
    this.options.log.error('looking for executions to recover failed; retrying', { error });
  }

  private recoveryRecovered(): void {
    this.recoveryFailing = false;
    this.options.log.info('looking for executions to recover works again');
  }

  private isWaiting(id: string): boolean {
    for (const queue of this.waiting.values()) if (queue.some((e) => e.id === id)) return true;
    return false;
  }
}

/**
 * Every step of an execution lands in one trace, even across a crash and a takeover: the
 * trace id is derived from the execution id, under a virtual root span.
 */
function executionTraceContext(executionId: string) {
  const digest = createHash('sha256').update(executionId).digest('hex');
  return trace.setSpanContext(context.active(), {
    traceId: digest.slice(0, 32),
    spanId: digest.slice(32, 48),
    traceFlags: TraceFlags.SAMPLED,
    isRemote: true,
  });
}

export function isTerminal(execution: Execution): boolean {
  return TERMINAL_STATES.includes(execution.state);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function specsOf(definitions: ReadonlyMap<string, CompiledSaga>): Map<string, SagaSpec> {
  return new Map([...definitions].map(([name, compiled]) => [name, compiled.spec]));
}
