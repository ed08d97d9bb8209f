/**
 * The AiService controller: informers on AiServices and on every kind of child, a work
 * queue keyed by namespace/name, and a reconcile that applies what render wants, deletes
 * what it no longer wants, and reports what is true in status. It writes nothing when
 * the cluster already matches.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import {
  aiService as aiServiceSchema,
  formatErrors,
  validateResource,
  type AiService,
  type Saga,
} from '../../api/index.js';
import type { KubeClient } from '../kube/client.js';
import { Informer, keyOf, keyOfObject } from '../kube/informer.js';
import { AI_SERVICE, CHILD_TYPES, EVENT, SAGA, typeOf, type ResourceType } from '../kube/resources.js';
import type { Logger } from '../../lib/log/index.js';
import type { OperatorMetrics } from '../metrics.js';
import {
  MANAGED_BY,
  renderAiService,
  stepServices,
  type KubeObject,
  type RenderOptions,
} from '../render/index.js';
import { desiredSagaStatus } from './saga-status.js';
import { containsDesired } from './compare.js';
import { WorkQueue } from './queue.js';
import { desiredStatus, sameStatus, type DeploymentState } from './status.js';

type LiveObject = KubernetesObject & {
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    generation?: number;
    deletionTimestamp?: string;
    ownerReferences?: { uid: string; kind: string; name: string; controller?: boolean }[];
  };
  status?: Record<string, unknown>;
};
type LiveAiService = LiveObject & Pick<AiService, 'spec'> & { status?: AiService['status'] };
type LiveSaga = LiveObject & {
  spec?: {
    orchestrator?: string;
    steps?: { action?: { service?: string }; compensation?: { service?: string } }[];
  };
};

/** Saga keys share the queue with AiService keys; this prefix tells them apart. */
const SAGA_KEY = 'saga:';

export interface AiServiceControllerOptions {
  client: KubeClient;
  log: Logger;
  metrics: OperatorMetrics;
  render?: Omit<RenderOptions, 'owner' | 'namespace'>;
  /** Watch one namespace only; all namespaces when undefined. */
  namespace?: string;
  workers?: number;
  /** Every AiService is reconciled again this often, as a safety net. */
  resyncMs?: number;
}

export class AiServiceController {
  private readonly queue = new WorkQueue();
  private readonly aiServices: Informer<LiveAiService>;
  private readonly sagas: Informer<LiveSaga>;
  private readonly children = new Map<string, Informer<LiveObject>>();
  private readonly workers: Promise<void>[] = [];
  private resyncTimer?: NodeJS.Timeout;
  private running = false;
  private stopped = false;

  constructor(private readonly options: AiServiceControllerOptions) {
    const onError = (error: unknown) => options.log.warn('watch failed; retrying', { error: String(error) });
    const scope = { namespace: options.namespace, onError };
    this.aiServices = new Informer<LiveAiService>(
      options.client,
      AI_SERVICE,
      (_event, object) => this.enqueue(object),
      scope,
    );
    // A Saga changes its orchestrator's sidecar config and its step services' policies.
    this.sagas = new Informer<LiveSaga>(
      options.client,
      SAGA,
      (_event, saga) => {
        this.queue.add(`${SAGA_KEY}${keyOfObject(saga)}`);
        const namespace = saga.metadata.namespace;
        const services = new Set([
          saga.spec?.orchestrator,
          ...(saga.spec?.steps ?? []).flatMap((s) => [s.action?.service, s.compensation?.service]),
        ]);
        for (const service of services) if (service) this.queue.add(keyOf(namespace, service));
        this.options.metrics.queueDepth.set(this.queue.length);
      },
      scope,
    );
    for (const type of CHILD_TYPES) {
      const informer = new Informer<LiveObject>(
        options.client,
        type,
        (_event, object) => this.enqueueOwner(object),
        { ...scope, labelSelector: `app.kubernetes.io/managed-by=${MANAGED_BY}` },
      );
      this.children.set(type.kind, informer);
    }
  }

  /** Fills every cache, then starts the workers; resolves once they run. */
  async start(): Promise<void> {
    await Promise.all([
      this.aiServices.start(),
      this.sagas.start(),
      ...[...this.children.values()].map((i) => i.start()),
    ]);
    // Stopped while the caches were filling (leadership lost): start nothing.
    if (this.stopped) return;
    this.running = true;
    for (const resource of this.aiServices.list()) this.enqueue(resource);
    for (const saga of this.sagas.list()) this.queue.add(`${SAGA_KEY}${keyOfObject(saga)}`);
    for (let i = 0; i < (this.options.workers ?? 2); i++) this.workers.push(this.work());
    const resyncMs = this.options.resyncMs ?? 10 * 60_000;
    this.resyncTimer = setInterval(() => this.aiServices.list().forEach((r) => this.enqueue(r)), resyncMs);
    this.resyncTimer.unref();
  }

  /** Stops taking work, lets in-flight reconciles finish, stops the watches. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.running = false;
    clearInterval(this.resyncTimer);
    this.queue.shutDown();
    await Promise.all(this.workers);
    this.aiServices.stop();
    this.sagas.stop();
    for (const informer of this.children.values()) informer.stop();
  }

  get queueDepth(): number {
    return this.queue.length;
  }

  private enqueue(resource: KubernetesObject): void {
    this.queue.add(keyOfObject(resource));
    // A Saga's readiness depends on the AiServices it names.
    for (const saga of this.sagas?.list() ?? []) {
      if (saga.metadata.namespace === resource.metadata?.namespace)
        this.queue.add(`${SAGA_KEY}${keyOfObject(saga)}`);
    }
    this.options.metrics.queueDepth.set(this.queue.length);
  }

  private enqueueOwner(child: LiveObject): void {
    const owner = child.metadata.ownerReferences?.find((o) => o.controller && o.kind === AI_SERVICE.kind);
    if (owner) this.queue.add(keyOf(child.metadata.namespace, owner.name));
    this.options.metrics.queueDepth.set(this.queue.length);
  }

  private async work(): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      const timer = this.options.metrics.reconcileDuration.startTimer();
      try {
        await this.reconcile(key);
        this.queue.forget(key);
        this.options.metrics.reconciles.inc({ result: 'success' });
      } catch (error) {
        const delay = this.queue.addRateLimited(key);
        this.options.metrics.reconciles.inc({ result: 'error' });
        this.options.log.error('reconcile failed; will retry', {
          key,
          retryInMs: Math.round(delay),
          error: String(error),
        });
      } finally {
        timer();
        this.queue.done(key);
        this.options.metrics.queueDepth.set(this.queue.length);
      }
    }
  }

  private async reconcile(key: string): Promise<void> {
    if (key.startsWith(SAGA_KEY)) return this.reconcileSaga(key.slice(SAGA_KEY.length));
    const [namespace, name] = key.split('/') as [string, string];
    const live = this.aiServices.get(namespace, name);
    if (!live || live.metadata.deletionTimestamp || !this.running) return;

    const validation = validateResource({ ...live, status: undefined });
    if (!validation.ok || validation.resource.kind !== 'AiService') {
      const message = validation.ok
        ? 'not an AiService'
        : formatErrors(validation.errors).replaceAll('\n', '; ');
      await this.writeStatus(live, undefined, { reason: 'InvalidSpec', message });
      return;
    }
    const resource = aiServiceSchema.parse(validation.resource);
    const desired = renderAiService(resource, {
      ...this.options.render,
      namespace,
      sagas: this.validSagas(namespace),
      owner: { apiVersion: AI_SERVICE.apiVersion, kind: AI_SERVICE.kind, name, uid: live.metadata.uid ?? '' },
    });

    let applyError: { reason: string; message: string } | undefined;
    const changed: string[] = [];
    for (const object of desired) {
      const type = typeOf(object.apiVersion, object.kind) as ResourceType;
      const current = this.children.get(type.kind)?.get(namespace, object.metadata.name);
      if (current && containsDesired(current, object)) continue;
      try {
        await this.options.client.apply(type, object);
        changed.push(`${current ? 'updated' : 'created'} ${object.kind}/${object.metadata.name}`);
      } catch (error) {
        applyError = {
          reason: 'ApplyFailed',
          message: `${object.kind}/${object.metadata.name}: ${String(error)}`,
        };
        break;
      }
    }
    if (!applyError) changed.push(...(await this.prune(live, desired)));

    const deployment = this.children.get('Deployment')?.get(namespace, name);
    await this.writeStatus(live, deployment, applyError);
    if (changed.length > 0) {
      this.options.log.info('reconciled', { key, changes: changed });
      await this.event(live, 'Normal', 'Reconciled', changed.join(', '));
    }
    if (applyError) {
      await this.event(live, 'Warning', applyError.reason, applyError.message);
      throw new Error(applyError.message);
    }
  }

  /** The namespace's Sagas that pass validation; invalid ones say why in their status. */
  private validSagas(namespace: string): Saga[] {
    return this.sagas
      .list()
      .filter((s) => s.metadata.namespace === namespace && !s.metadata.deletionTimestamp)
      .flatMap((live) => {
        const result = validateResource({ ...live, status: undefined });
        return result.ok && result.resource.kind === 'Saga' ? [result.resource] : [];
      });
  }

  private async reconcileSaga(key: string): Promise<void> {
    const [namespace, name] = key.split('/') as [string, string];
    const live = this.sagas.get(namespace, name);
    if (!live || live.metadata.deletionTimestamp || !this.running) return;
    const validation = validateResource({ ...live, status: undefined });
    const saga = validation.ok && validation.resource.kind === 'Saga' ? validation.resource : undefined;
    const exists = (service: string) => this.aiServices.get(namespace, service) !== undefined;
    const status = desiredSagaStatus({
      generation: live.metadata.generation ?? 0,
      ...(validation.ok ? {} : { invalid: formatErrors(validation.errors).replaceAll('\n', '; ') }),
      orchestrator: saga?.spec.orchestrator ?? String(live.spec?.orchestrator ?? ''),
      orchestratorExists: saga ? exists(saga.spec.orchestrator) : false,
      missingServices: saga ? stepServices(saga).filter((s) => !exists(s)) : [],
      previous: live.status as { conditions?: never },
      now: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    });
    if (sameStatus(live.status, status as never)) return;
    await this.options.client.applyStatus(SAGA, namespace, name, status);
    const ready = status.conditions[0];
    if (ready && ready.status !== 'True') await this.event(live, 'Warning', ready.reason, ready.message);
  }

  /** Deletes children this AiService owns that render no longer wants. */
  private async prune(owner: LiveObject, desired: KubeObject[]): Promise<string[]> {
    const wanted = new Set(desired.map((o) => `${o.kind}/${o.metadata.name}`));
    const deleted: string[] = [];
    for (const [kind, informer] of this.children) {
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
    const status = desiredStatus({
      resource: live as never,
      deployment: deployment ? deploymentState(deployment) : undefined,
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

  private async event(
    regarding: LiveObject,
    type: 'Normal' | 'Warning',
    reason: string,
    message: string,
  ): Promise<void> {
    const now = new Date().toISOString();
    try {
      await this.options.client.create(EVENT, {
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { generateName: `${regarding.metadata.name}.`, namespace: regarding.metadata.namespace },
        involvedObject: {
          apiVersion: regarding.apiVersion,
          kind: regarding.kind,
          name: regarding.metadata.name,
          namespace: regarding.metadata.namespace,
          uid: regarding.metadata.uid,
        },
        type,
        reason,
        message: message.slice(0, 1024),
        source: { component: MANAGED_BY },
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      } as KubernetesObject);
    } catch (error) {
      // Events are informational: failing to record one must not fail the reconcile.
      this.options.log.warn('could not record event', { reason, error: String(error) });
    }
  }
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
