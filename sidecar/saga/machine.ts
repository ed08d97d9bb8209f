/**
 * The saga state machine, pure: given a definition and an execution, what to call next,
 * and what an outcome changes. Steps run forward in order; a failure that may not be
 * retried (or has used its tries) before the pivot compensates the completed steps in
 * reverse order; after the pivot, failures are retried forward. Compensations are retried
 * with capped backoff and never skipped: one that cannot succeed stops the execution in
 * `compensation-failed` for a person to resolve. Time and randomness are passed in.
 */
import { durationMs, type SagaSpec } from '../../api/index.js';

export type ExecutionState = 'running' | 'compensating' | 'completed' | 'compensated' | 'compensation-failed';
export type StepStatus = 'pending' | 'succeeded' | 'failed' | 'compensated' | 'compensation-failed';

export const TERMINAL_STATES: readonly ExecutionState[] = ['completed', 'compensated', 'compensation-failed'];

export interface StepResponse {
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

export interface StepRecord {
  name: string;
  status: StepStatus;
  attempts: number;
  compensationAttempts: number;
  response?: StepResponse;
  error?: string;
}

export interface Execution {
  id: string;
  saga: string;
  idempotencyKey: string;
  input: unknown;
  state: ExecutionState;
  startedAt: number;
  deadline: number;
  updatedAt: number;
  /** Forward: the step to run. Compensating: the step to look at next, going down. */
  cursor: number;
  /** No call before this time (backoff). */
  notBefore: number;
  pivotPassed: boolean;
  steps: StepRecord[];
  /** Why the execution compensates or stopped. */
  reason?: string;
  /** Bumped on every save; stores use it for compare-and-set. */
  version: number;
}

export type Action =
  | {
      kind: 'call';
      phase: 'action' | 'compensation';
      step: number;
      attempt: number;
      /** Unique to execution, step and phase; the same on every retry. */
      idempotencyKey: string;
      notBefore: number;
    }
  | { kind: 'finished' };

export type Failure = { status: number } | { error: 'connect-failure' | 'timeout' | 'reset' | 'template' };
export type Outcome = { ok: true; response: StepResponse } | { ok: false; failure: Failure; message: string };

/** Compensations are retried this many times before the execution stops for a person. */
export const COMPENSATION_MAX_ATTEMPTS = 20;

export function startExecution(
  spec: SagaSpec,
  saga: string,
  id: string,
  idempotencyKey: string,
  input: unknown,
  nowMs: number,
): Execution {
  return {
    id,
    saga,
    idempotencyKey,
    input,
    state: 'running',
    startedAt: nowMs,
    deadline: nowMs + durationMs(spec.timeout),
    updatedAt: nowMs,
    cursor: 0,
    notBefore: nowMs,
    pivotPassed: false,
    steps: spec.steps.map((s) => ({ name: s.name, status: 'pending', attempts: 0, compensationAttempts: 0 })),
    version: 0,
  };
}

export function nextAction(spec: SagaSpec, execution: Execution): Action {
  if (execution.state === 'running') {
    const step = execution.steps[execution.cursor];
    if (!step) return { kind: 'finished' };
    return call(execution, 'action', execution.cursor, step.attempts + 1);
  }
  if (execution.state === 'compensating') {
    const index = nextToCompensate(spec, execution);
    if (index === -1) return { kind: 'finished' };
    return call(
      execution,
      'compensation',
      index,
      (execution.steps[index] as StepRecord).compensationAttempts + 1,
    );
  }
  return { kind: 'finished' };
}

/** Applies the outcome of the call `action` describes. Returns a new execution. */
export function recordOutcome(
  spec: SagaSpec,
  execution: Execution,
  action: Extract<Action, { kind: 'call' }>,
  outcome: Outcome,
  nowMs: number,
  random: () => number = Math.random,
): Execution {
  const next = clone(execution, nowMs);
  const step = next.steps[action.step] as StepRecord;
  const definition = spec.steps[action.step] as SagaSpec['steps'][number];
  if (action.phase === 'action') {
    step.attempts = action.attempt;
    if (outcome.ok) {
      step.status = 'succeeded';
      step.response = outcome.response;
      delete step.error;
      if (definition.pivot) next.pivotPassed = true;
      next.cursor = action.step + 1;
      next.notBefore = nowMs;
      if (next.cursor >= next.steps.length) next.state = 'completed';
      return next;
    }
    step.error = outcome.message;
    const retryable = outcome.failure && isRetryable(definition.retry.retryOn, outcome.failure);
    if (next.pivotPassed || (retryable && action.attempt < definition.retry.maxAttempts)) {
      // After the pivot there is no way back: retry forward, whatever the failure.
      next.notBefore = nowMs + backoff(definition.retry.backoff, action.attempt, random);
      return next;
    }
    step.status = 'failed';
    return beginCompensation(spec, next, `step ${step.name} failed: ${outcome.message}`, nowMs);
  }
  step.compensationAttempts = action.attempt;
  if (outcome.ok) {
    step.status = 'compensated';
    delete step.error;
    next.cursor = action.step - 1;
    next.notBefore = nowMs;
    if (nextToCompensate(spec, next) === -1) next.state = 'compensated';
    return next;
  }
  step.error = `compensation: ${outcome.message}`;
  const retryable = isRetryable(['5xx', '429', 'connect-failure', 'timeout'], outcome.failure);
  if (retryable && action.attempt < COMPENSATION_MAX_ATTEMPTS) {
    next.notBefore = nowMs + backoff(definition.retry.backoff, action.attempt, random);
    return next;
  }
  step.status = 'compensation-failed';
  next.state = 'compensation-failed';
  next.reason = `${next.reason ?? ''}; compensation of ${step.name} failed: ${outcome.message}`.replace(
    /^; /,
    '',
  );
  return next;
}

/** Saga timeout or cancellation: compensate, unless the pivot has passed. */
export function abort(
  spec: SagaSpec,
  execution: Execution,
  reason: string,
  nowMs: number,
): Execution | string {
  if (execution.state !== 'running') return `execution is ${execution.state}`;
  if (execution.pivotPassed) return 'the pivot step has succeeded: the execution can only go forward';
  return beginCompensation(spec, clone(execution, nowMs), reason, nowMs);
}

function beginCompensation(spec: SagaSpec, execution: Execution, reason: string, nowMs: number): Execution {
  execution.state = 'compensating';
  execution.reason = reason;
  execution.cursor = execution.cursor - (execution.steps[execution.cursor]?.status === 'succeeded' ? 0 : 1);
  execution.notBefore = nowMs;
  if (nextToCompensate(spec, execution) === -1) execution.state = 'compensated';
  return execution;
}

function nextToCompensate(spec: SagaSpec, execution: Execution): number {
  for (let i = Math.min(execution.cursor, execution.steps.length - 1); i >= 0; i--) {
    if (execution.steps[i]?.status === 'succeeded' && spec.steps[i]?.compensation) return i;
  }
  return -1;
}

function call(
  execution: Execution,
  phase: 'action' | 'compensation',
  step: number,
  attempt: number,
): Extract<Action, { kind: 'call' }> {
  const name = (execution.steps[step] as StepRecord).name;
  return {
    kind: 'call',
    phase,
    step,
    attempt,
    idempotencyKey: `${execution.id}:${name}:${phase}`,
    notBefore: execution.notBefore,
  };
}

/** Whether a failure is in a step's retryOn list (5xx, 4xx, 429, connect-failure, timeout, or a code). */
export function isRetryable(retryOn: readonly string[], failure: Failure): boolean {
  if ('error' in failure) {
    if (failure.error === 'template') return false;
    if (failure.error === 'reset') return retryOn.includes('connect-failure') || retryOn.includes('5xx');
    return retryOn.includes(failure.error);
  }
  const { status } = failure;
  return (
    retryOn.includes(String(status)) ||
    (status >= 500 && retryOn.includes('5xx')) ||
    (status >= 400 && status < 500 && retryOn.includes('4xx'))
  );
}

/** initial × multiplier^(attempt-1), capped at max, with equal jitter (half fixed, half random). */
export function backoff(
  settings: { initial: string; multiplier: number; max: string },
  attempt: number,
  random: () => number,
): number {
  const base = Math.min(
    durationMs(settings.max),
    durationMs(settings.initial) * settings.multiplier ** (attempt - 1),
  );
  return Math.round(base / 2 + (random() * base) / 2);
}

function clone(execution: Execution, nowMs: number): Execution {
  return { ...execution, steps: execution.steps.map((s) => ({ ...s })), updatedAt: nowMs };
}
