/**
 * The AiService reconciler: read the AiService and the Sagas that concern it from the
 * caches, render what it should own (the same gathering and render functions every
 * GitOps path uses), server-side apply what differs, delete what is no longer wanted,
 * and report what is true in status. It writes nothing when the cluster already matches.
 */
import { formatErrors, validateResource, type AiService, type Saga } from '../../api/index.js';
import { AimeshError } from '../../lib/errors/index.js';
import type { Logger } from '../../lib/log/index.js';
import {
  asksForIstio,
  renderAiService,
  renderInputFor,
  type KubeObject,
  type RenderOptions,
} from '../../render/index.js';
import { containsDesired } from '../controller/compare.js';
import type { Reconciler } from '../controller/controller.js';
import type { EventRecorder } from '../events.js';
import type { ChildWriter } from '../kube/client.js';
import { AI_SERVICE, typeOf, type ResourceType } from '../kube/resources.js';
import type { Caches, LiveObject } from '../watches.js';
import {
  desiredStatus,
  sameStatus,
  type AiServiceStatusValue,
  type DeploymentState,
} from './aiservice-status.js';

type LiveAiService = LiveObject & { status?: AiService['status'] };

export interface AiServiceReconcilerOptions {
  client: ChildWriter;
  caches: Caches;
  events: Pick<EventRecorder, 'record'>;
  log: Logger;
  render?: RenderOptions;
  /** What the cluster serves now; Istio policies are rendered only while it serves them. */
  facts?: () => { istio: boolean };
  /** Pods an AiService adopts that run without the sidecar, by namespace/name (miss detection). */
  adoptedMisses?: (key: string) => readonly { pod: string; reason: string; fix: string }[];
}

export class AiServiceReconciler implements Reconciler {
  readonly name = 'aiservice';
  /** The last render per AiService, as JSON: a string is a fraction of the objects' heap size. */
  private readonly rendered = new Map<
    string,
    { fingerprint: string; desired: string; asksForIstio: boolean }
  >();

  /**
   * AiServices whose IstioPolicies=False was already reported by an Event. The cached
   * AiService shows the status this operator wrote only once the watch brings it back, so a
   * reconcile woken in between (a child created by the first) would report it again.
   */
  private readonly istioOffReported = new Set<string>();

  constructor(private readonly options: AiServiceReconcilerOptions) {}

  async reconcile(key: string): Promise<void> {
    const [namespace, name] = key.split('/') as [string, string];
    const live = this.options.caches.aiServices.get(namespace, name) as LiveAiService | undefined;
    if (!live || live.metadata.deletionTimestamp) {
      this.rendered.delete(key);
      this.istioOffReported.delete(key);
      return;
    }
    const { desired, asksForIstio: istioAsked, istio } = await this.desired(key, live);

    const { changed, failure } = await this.apply(namespace, desired);
    if (!failure) changed.push(...(await this.prune(live, desired)));

    const deployment = this.options.caches.children.get('Deployment')?.get(namespace, name);
    const status = await this.writeStatus(
      live,
      deployment,
      failure,
      istioAsked ? { installed: istio } : undefined,
    );
    // Events are informational and the recorder never throws: they are sent without holding
    // up the reconcile (as client-go's recorder does), which saves a round trip per change.
    const wasOff = live.status?.conditions?.some((c) => c.type === 'IstioPolicies' && c.status === 'False');
    const isOff = status.conditions.some((c) => c.type === 'IstioPolicies' && c.status === 'False');
    if (isOff && !wasOff && !this.istioOffReported.has(key)) {
      const condition = status.conditions.find((c) => c.type === 'IstioPolicies');
      void this.options.events.record(live, 'Warning', 'IstioNotInstalled', condition?.message ?? '');
    }
    if (isOff) this.istioOffReported.add(key);
    else this.istioOffReported.delete(key);
    if (changed.length > 0) {
      this.options.log.info('reconciled', { key, changes: changed });
      void this.options.events.record(live, 'Normal', 'Reconciled', changed.join(', '));
    }
    if (failure) {
      void this.options.events.record(live, 'Warning', failure.reason, failure.message);
      throw new AimeshError('dependency.failed', failure.message);
    }
  }

  /**
   * What this AiService should own. Rendering is the costly part of a reconcile, and most
   * reconciles are woken by a child changing (often our own apply), so the last render is
   * kept per AiService and reused while nothing it depends on changed: the AiService's
   * spec (generation) and metadata, its namespace's Sagas, and the cluster facts.
   */
  private async desired(
    key: string,
    live: LiveAiService,
  ): Promise<{ desired: KubeObject[]; asksForIstio: boolean; istio: boolean }> {
    const [namespace, name] = key.split('/') as [string, string];
    const istio = this.options.facts?.().istio ?? true;
    const sagas = this.options.caches.sagas
      .list()
      .filter((s) => s.metadata.namespace === namespace && !s.metadata.deletionTimestamp);
    const fingerprint = JSON.stringify([
      live.metadata.uid,
      live.metadata.generation,
      live.metadata.labels,
      live.metadata.annotations,
      sagas.map((s) => `${s.metadata.uid}@${s.metadata.generation}`).sort(),
      istio,
    ]);
    const memo = this.rendered.get(key);
    if (memo?.fingerprint === fingerprint)
      return { desired: JSON.parse(memo.desired) as KubeObject[], asksForIstio: memo.asksForIstio, istio };
    this.rendered.delete(key);

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
      istio,
      owner: { apiVersion: AI_SERVICE.apiVersion, kind: AI_SERVICE.kind, name, uid: live.metadata.uid ?? '' },
    });
    const asked = asksForIstio(validation.resource);
    this.rendered.set(key, { fingerprint, desired: JSON.stringify(desired), asksForIstio: asked });
    return { desired, asksForIstio: asked, istio };
  }

  /**
   * Applies each desired object that the cache shows differs. Independent objects go
   * together, so a reconcile costs two round trips however many children change: first
   * everything the Deployment's pods refer to (ServiceAccount, ConfigMap) with the rest,
   * then the Deployment, so no ReplicaSet is made before what its pods need exists.
   * After a failure nothing more is applied; what went through is reported with it.
   */
  private async apply(
    namespace: string,
    desired: KubeObject[],
  ): Promise<{ changed: string[]; failure?: { reason: string; message: string } }> {
    const changed: string[] = [];
    const waves = [
      desired.filter((o) => o.kind !== 'Deployment'),
      desired.filter((o) => o.kind === 'Deployment'),
    ];
    for (const wave of waves) {
      const results = await Promise.all(wave.map((object) => this.applyOne(namespace, object)));
      let failure: { reason: string; message: string } | undefined;
      for (const result of results) {
        if (result.changed) changed.push(result.changed);
        failure ??= result.failure;
      }
      if (failure) return { changed, failure };
    }
    return { changed };
  }

  private async applyOne(
    namespace: string,
    object: KubeObject,
  ): Promise<{ changed?: string; failure?: { reason: string; message: string } }> {
    const type = typeOf(object.apiVersion, object.kind) as ResourceType;
    const current = this.options.caches.children.get(type.kind)?.get(namespace, object.metadata.name);
    if (current && containsDesired(current, object)) return {};
    try {
      await this.options.client.apply(type, object);
      return { changed: `${current ? 'updated' : 'created'} ${object.kind}/${object.metadata.name}` };
    } catch (error) {
      return {
        failure: {
          reason: 'ApplyFailed',
          message: `${object.kind}/${object.metadata.name}: ${String(error)}`,
        },
      };
    }
  }

  /** Deletes children this AiService owns that render no longer wants. */
  private async prune(owner: LiveObject, desired: KubeObject[]): Promise<string[]> {
    const wanted = new Set(desired.map((o) => `${o.kind}/${o.metadata.name}`));
    const deleted: string[] = [];
    const uid = owner.metadata.uid;
    if (!uid) return deleted;
    for (const [kind, informer] of this.options.caches.children) {
      for (const child of informer.ownedBy(uid)) {
        if (wanted.has(`${kind}/${child.metadata.name}`)) continue;
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
    istio?: { installed: boolean },
  ): Promise<AiServiceStatusValue> {
    const adopting = (live as { spec?: { workload?: unknown } }).spec?.workload !== undefined;
    const key = `${live.metadata.namespace ?? ''}/${live.metadata.name}`;
    const status = desiredStatus({
      resource: live as never,
      deployment: deployment ? deploymentState(deployment) : undefined,
      ...(adopting ? { adoption: { missing: this.options.adoptedMisses?.(key) ?? [] } } : {}),
      applyError,
      ...(istio ? { istio } : {}),
      now: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    });
    if (!sameStatus(live.status, status))
      await this.options.client.applyStatus(
        AI_SERVICE,
        live.metadata.namespace ?? '',
        live.metadata.name,
        status,
      );
    return status;
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
    conditions?: { type: string; status: string; reason?: string; message?: string }[];
  };
  const conditions = status.conditions ?? [];
  // ReplicaFailure says pods cannot even be created (quota, admission, a missing
  // ServiceAccount); it is the child's own reason and goes into Degraded as is.
  const replicaFailure = conditions.find((c) => c.type === 'ReplicaFailure' && c.status === 'True');
  return {
    generation: deployment.metadata.generation,
    observedGeneration: status.observedGeneration,
    replicas: status.replicas,
    updatedReplicas: status.updatedReplicas,
    readyReplicas: status.readyReplicas,
    availableReplicas: status.availableReplicas,
    progressDeadlineExceeded: conditions.some((c) => c.reason === 'ProgressDeadlineExceeded'),
    ...(replicaFailure
      ? {
          failure: {
            reason: replicaFailure.reason ?? 'ReplicaFailure',
            message: `Deployment: ${replicaFailure.message ?? 'pods could not be created'}`,
          },
        }
      : {}),
  };
}
