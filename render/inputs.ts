/**
 * Everything an AiService's render depends on besides the AiService itself, gathered in
 * one place. The operator (from its caches) and every GitOps path (`aimesh render`,
 * `npm start`, `cdk8s synth`, the cdk8s constructs) call these same functions, so both
 * render from the same inputs and produce the same objects. Pure.
 */
import type { AiService, Saga } from '../api/index.js';
import { stepServices } from './saga.js';

export interface RenderInput {
  resource: AiService;
  /** The namespace the AiService's children go to. */
  namespace: string;
  /**
   * The valid Sagas of that namespace that name this AiService (as orchestrator or step
   * service), sorted by name: they add saga definitions and step grants.
   */
  sagas: Saga[];
}

/** The namespace a resource lives in: its own, or the default given for files without one. */
export function namespaceOf(resource: AiService | Saga, defaultNamespace = 'default'): string {
  return resource.metadata.namespace ?? defaultNamespace;
}

/**
 * The input for one AiService, given the valid Sagas that may concern it (any namespace;
 * only its own namespace's count, as the operator sees them).
 */
export function renderInputFor(
  resource: AiService,
  sagas: readonly Saga[],
  defaultNamespace = 'default',
): RenderInput {
  const namespace = namespaceOf(resource, defaultNamespace);
  const name = resource.metadata.name;
  const relevant = sagas
    .filter((saga) => namespaceOf(saga, defaultNamespace) === namespace && mentions(saga, name))
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  return { resource, namespace, sagas: relevant };
}

/** Inputs for every AiService among a set of valid resources, as a GitOps render sees them. */
export function renderInputs(
  resources: readonly (AiService | Saga)[],
  defaultNamespace = 'default',
): RenderInput[] {
  const sagas = resources.filter((r): r is Saga => r.kind === 'Saga');
  return resources
    .filter((r): r is AiService => r.kind === 'AiService')
    .map((resource) => renderInputFor(resource, sagas, defaultNamespace));
}

function mentions(saga: Saga, service: string): boolean {
  return saga.spec.orchestrator === service || stepServices(saga).includes(service);
}
