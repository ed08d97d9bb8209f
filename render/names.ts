import type { AiService } from '../api/index.js';

export const MANAGED_BY = 'aimesh-operator';
export const SERVICE_LABEL = 'aimesh.io/service';

/** Labels on every child of an AiService; the selector uses only SERVICE_LABEL. */
export function labelsFor(resource: AiService): Record<string, string> {
  return {
    'app.kubernetes.io/name': resource.metadata.name,
    'app.kubernetes.io/managed-by': MANAGED_BY,
    [SERVICE_LABEL]: resource.metadata.name,
  };
}

/** The pods an AiService stands for: those it runs, or those its workload selector adopts. */
export function selectorFor(resource: AiService): Record<string, string> {
  return resource.spec.workload?.selector.matchLabels ?? { [SERVICE_LABEL]: resource.metadata.name };
}

export const sidecarConfigMapName = (name: string) => `${name}-sidecar`;
export const upstreamPolicyName = (name: string, upstream: string) => `${name}-to-${upstream}`;
