/**
 * What Sagas add to an AiService's objects. The orchestrator's sidecar config carries the
 * saga definitions (and an upstream for every step service); a step service whose callers
 * are restricted lets the orchestrator's ServiceAccount call exactly its steps' methods
 * and paths. Pure.
 */
import type { Saga, SagaAction } from '../api/index.js';

export function sagasOrchestratedBy(name: string, sagas: readonly Saga[]): Saga[] {
  return sagas
    .filter((s) => s.spec.orchestrator === name)
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
}

/** The services a saga's steps call, actions and compensations both. */
export function stepServices(saga: Saga): string[] {
  return [...new Set(saga.spec.steps.flatMap((s) => calls(s).map((c) => c.service)))].sort();
}

export interface OrchestratorGrant {
  /** The orchestrator AiService (its ServiceAccount has the same name). */
  orchestrator: string;
  methods: string[];
  paths: string[];
}

/** For a step service: which orchestrators may call which methods and paths on it. */
export function grantsFor(service: string, sagas: readonly Saga[]): OrchestratorGrant[] {
  const byOrchestrator = new Map<string, { methods: Set<string>; paths: Set<string> }>();
  for (const saga of sagas) {
    for (const call of saga.spec.steps.flatMap(calls)) {
      if (call.service !== service) continue;
      const grant = byOrchestrator.get(saga.spec.orchestrator) ?? { methods: new Set(), paths: new Set() };
      grant.methods.add(call.method);
      grant.paths.add(istioPath(call.path));
      byOrchestrator.set(saga.spec.orchestrator, grant);
    }
  }
  return [...byOrchestrator.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([orchestrator, grant]) => ({
      orchestrator,
      methods: [...grant.methods].sort(),
      paths: [...grant.paths].sort(),
    }));
}

/**
 * An Istio path for a templated step path. Istio matches exact paths, or one "*" as a
 * prefix or suffix, so a path is cut at its first placeholder: /users/{{ input.id }}/x
 * becomes /users/*. The query string is not part of the match.
 */
export function istioPath(template: string): string {
  const path = template.split('?')[0] as string;
  const placeholder = path.indexOf('{{');
  if (placeholder === -1) return path;
  return `${path.slice(0, path.lastIndexOf('/', placeholder) + 1)}*`;
}

function calls(step: Saga['spec']['steps'][number]): SagaAction[] {
  return step.compensation ? [step.action, step.compensation] : [step.action];
}
