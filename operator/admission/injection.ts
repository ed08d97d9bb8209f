/**
 * The sidecar injection webhook: for each pod the API server is about to create, the
 * pure `decideInjection` over the AiServices of its namespace, answered as a JSON patch
 * or, when the pod cannot be injected, with warnings and no patch: a bad annotation never
 * breaks a pod, and the operator's miss detection reports the pod afterwards.
 */
import type { AiService } from '../../api/index.js';
import { decideInjection, type ConsulDefaults, type PodLike } from '../../render/index.js';
import type { AdmissionRequest, Verdict, Webhook } from './review.js';

export const INJECTION_PATH = '/mutate/inject';

export interface InjectionWebhookOptions {
  /** The valid AiServices of a namespace, from the admission server's own cache. */
  aiServicesIn: (namespace: string) => readonly AiService[];
  sidecarImage: string;
  /** The cluster's Consul: injected sidecars reach it as rendered ones do. */
  consul?: ConsulDefaults;
  nativeSidecar: boolean;
}

export function injectionWebhook(options: InjectionWebhookOptions): Webhook {
  return (request: AdmissionRequest): Verdict => {
    // The webhook configuration sends only pod CREATEs; anything else is let through untouched.
    if (request.kind.kind !== 'Pod' || request.operation !== 'CREATE' || request.subResource)
      return { outcome: 'ignored' };
    const pod = request.object as PodLike;
    const namespace = request.namespace ?? pod.metadata?.namespace ?? 'default';
    const decision = decideInjection(pod, {
      namespace,
      aiServices: options.aiServicesIn(namespace),
      sidecarImage: options.sidecarImage,
      nativeSidecar: options.nativeSidecar,
      ...(options.consul ? { consul: options.consul } : {}),
    });
    if (!decision.inject)
      return { outcome: decision.warnings.length > 0 ? 'refused' : 'skipped', warnings: decision.warnings };
    return { outcome: 'injected', patch: decision.patch, warnings: decision.warnings };
  };
}
