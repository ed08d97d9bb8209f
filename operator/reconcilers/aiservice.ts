/**
 * The AiService reconciler: read the AiService and the Sagas that concern it from the
 * caches, render what it should own (the same gathering and render functions every
 * GitOps path uses), server-side apply what differs, delete what is no longer wanted,
 * and report what is true in status. It writes nothing when the cluster already matches.
 */
import { formatErrors, validateResource, type AiService, type Saga } from '../../api/index.js';
import { AimeshError } from '../../lib/errors/index.js';
import type { Logger } from '../../lib/log/index.js';
import { renderAiService, renderInputFor, type KubeObject, type RenderOptions } from '../../render/index.js';
import { containsDesired } from '../controller/compare.js';
import type { Reconciler } from '../controller/controller.js';
import type { EventRecorder } from '../events.js';
import type { ChildWriter } from '../kube/client.js';
import { AI_SERVICE, typeOf, type ResourceType } from '../kube/resources.js';
import type { Caches, LiveObject } from '../watches.js';
import { desiredStatus, sameStatus, type DeploymentState } from './aiservice-status.js';

type LiveAiService = LiveObject & { status?: AiService['status'] };

export interface AiServiceReconcilerOptions {
  client: ChildWriter;
  caches: Caches;
  events: Pick<EventRecorder, 'record'>;
  log: Logger;
  render?: RenderOptions;
  /** Pods an AiService adopts that run without the sidecar, by namespace/name (miss detection). */
  adoptedMisses?: (key: string) => readonly { pod: string; reason: string; fix: string }[];
}

export class AiServiceReconciler implements Reconciler {
  readonly name = 'aiservice';

  constructor(private readonly options: AiServiceReconcilerOptions) {}

  async reconcile(key: string): Promise<void> {
    const [namespace, name] = key.split('/') as [string, string];
    const live = this.options.caches.aiServices.get(namespace, name) as LiveAiService | undefined;
    if (!live || live.metadata.deletionTimestamp) return;

    const validation = validateResource({ ...live, status: undefined });
    if (!validation.ok || validation.resource.kind !== 'AiService') {
      const message = validation.ok
        ? 'not an AiService'
        : formatErrors(validation.errors).replaceAll('\n', '; ');
      await this.writeStatus(live, undefined, { reason: 'InvalidSpec', message });
      // The spec must change before another try can succeed.
      throw new AimeshError('input.invalid', `${key}: ${message}`, { terminal: true });
    }
    const input = renderInputFor(validation.resource, validSagas(this.options.caches, namespace), namespace);
    const desired = renderAiService(input, {
      ...this.options.render,
      owner: { apiVersion: AI_SERVICE.apiVersion, kind: AI_SERVICE.kind, name, uid: live.metadata.uid ?? '' },
    });

    const { changed, failure } = await this.apply(namespace, desired);
    if (!failure) changed.push(...(await this.prune(live, desired)));

    const deployment = this.options.caches.children.get('Deployment')?.get(namespace, name);
    await this.writeStatus(live, deployment, failure);
    if (changed.length > 0) {
      this.options.log.info('reconciled', { key, changes: changed });
      await this.options.events.record(live, 'Normal', 'Reconciled', changed.join(', '));
    }
    if (failure) {
      await this.options.events.record(live, 'Warning', failure.reason, failure.message);
      throw new AimeshError('dependency.failed', failure.message);
    }
  }

  /** Applies each desired object that the cache shows differs; stops at the first failure. */
  private async apply(
    namespace: string,
    desired: KubeObject[],
  ): Promise<{ changed: string[]; failure?: { reason: string; message: string } }> {
    const changed: string[] = [];
    for (const object of desired) {
      const type = typeOf(object.apiVersion, object.kind) as ResourceType;
      const current = this.options.caches.children.get(type.kind)?.get(namespace, object.metadata.name);
      if (current && containsDesired(current, object)) continue;
      try {
        await this.options.client.apply(type, object);
        changed.push(`${current ? 'updated' : 'created'} ${object.kind}/${object.metadata.name}`);
      } catch (error) {
        return {
          changed,
          failure: {
            reason: 'ApplyFailed',
            message: `${object.kind}/${object.metadata.name}: ${String(error)}`,
          },
        };
      }
    }
    return { changed };
  }

  /** Deletes children this AiService owns that render no longer wants. */
  private async prune(owner: LiveObject, desired: KubeObject[]): Promise<string[]> {
    const wanted = new Set(desired.map((o) => `${o.kind}/${o.metadata.name}`));
    const deleted: string[] = [];
    for (const [kind, informer] of this.options.caches.children) {
      for (const child of informer.list()) {
        const owned = child.metadata.ownerReferences?.some(
          (o) => o.controller && o.uid === owner.metadata.uid,
        );
        if (!owned || wanted.has(`${kind}/${child.metadata.name}`)) continue;
        await this.options.client.delete(
          informer.type,
          child.metadata.namespace ?? '',
          child.metadata.name,
          child.metadata.uid,
        );
        deleted.push(`deleted ${kind}/${child.metadata.name}`);
      }
    }
    return deleted;
  }

  private async writeStatus(
    live: LiveAiService,
    deployment: LiveObject | undefined,
    applyError?: { reason: string; message: string },
  ): Promise<void> {
    const adopting = (live as { spec?: { workload?: unknown } }).spec?.workload !== undefined;
    const key = `${live.metadata.namespace ?? ''}/${live.metadata.name}`;
    const status = desiredStatus({
      resource: live as never,
      deployment: deployment ? deploymentState(deployment) : undefined,
      ...(adopting ? { adoption: { missing: this.options.adoptedMisses?.(key) ?? [] } } : {}),
      applyError,
      now: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    });
    if (sameStatus(live.status, status)) return;
    await this.options.client.applyStatus(
      AI_SERVICE,
      live.metadata.namespace ?? '',
      live.metadata.name,
      status,
    );
  }
}

/** The namespace's Sagas that pass validation; invalid ones say why in their own status. */
export function validSagas(caches: Caches, namespace: string): Saga[] {
  return caches.sagas
    .list()
    .filter((s) => s.metadata.namespace === namespace && !s.metadata.deletionTimestamp)
    .flatMap((live) => {
      const result = validateResource({ ...live, status: undefined });
      return result.ok && result.resource.kind === 'Saga' ? [result.resource] : [];
    });
}

function deploymentState(deployment: LiveObject): DeploymentState {
  const status = (deployment.status ?? {}) as {
    observedGeneration?: number;
    replicas?: number;
    updatedReplicas?: number;
    readyReplicas?: number;
    availableReplicas?: number;
    conditions?: { type: string; reason?: string }[];
  };
  return {
    generation: deployment.metadata.generation,
    observedGeneration: status.observedGeneration,
    replicas: status.replicas,
    updatedReplicas: status.updatedReplicas,
    readyReplicas: status.readyReplicas,
    availableReplicas: status.availableReplicas,
    progressDeadlineExceeded: status.conditions?.some((c) => c.reason === 'ProgressDeadlineExceeded'),
  };
}
