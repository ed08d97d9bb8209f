/**
 * Which finished executions a store removes, pure: per saga, those finished longer ago than
 * its `retention.finished`, then the oldest beyond `retention.maxFinished`. Unfinished
 * executions are never candidates, and neither are those of sagas without a policy here
 * (another orchestrator sharing the store may still run them).
 */
import { durationMs, type SagaSpec } from '../../api/index.js';
import { TERMINAL_STATES, type ExecutionState } from './machine.js';

export interface RetentionPolicy {
  finishedMs: number;
  maxFinished: number;
}

/** What retention needs to know about an execution, so stores need not parse whole ones. */
export interface ExecutionSummary {
  id: string;
  saga: string;
  state: ExecutionState;
  updatedAt: number;
}

export type RetentionPolicies = ReadonlyMap<string, RetentionPolicy>;

export function retentionPolicies(definitions: ReadonlyMap<string, SagaSpec>): RetentionPolicies {
  return new Map(
    [...definitions].map(([saga, spec]) => [
      saga,
      { finishedMs: durationMs(spec.retention.finished), maxFinished: spec.retention.maxFinished },
    ]),
  );
}

/** The ids to remove now. */
export function expiredExecutions(
  executions: Iterable<ExecutionSummary>,
  policies: RetentionPolicies,
  nowMs: number,
): string[] {
  const finishedBySaga = new Map<string, ExecutionSummary[]>();
  for (const execution of executions) {
    if (!TERMINAL_STATES.includes(execution.state) || !policies.has(execution.saga)) continue;
    const list = finishedBySaga.get(execution.saga);
    if (list) list.push(execution);
    else finishedBySaga.set(execution.saga, [execution]);
  }
  const expired: string[] = [];
  for (const [saga, finished] of finishedBySaga) {
    const policy = policies.get(saga) as RetentionPolicy;
    // Newest first; ties by id so every store and every run picks the same ones.
    finished.sort((a, b) => b.updatedAt - a.updatedAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    finished.forEach((execution, index) => {
      if (index >= policy.maxFinished || nowMs - execution.updatedAt > policy.finishedMs)
        expired.push(execution.id);
    });
  }
  return expired;
}
