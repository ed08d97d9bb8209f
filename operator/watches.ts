/**
 * Every watch the operator holds, and which controller each change wakes, declared in
 * one place (controller-runtime's `Watches`/`Owns`/`EnqueueRequestsFromMapFunc`):
 * - an AiService → its own reconcile, and every Saga of its namespace (a Saga's
 *   readiness depends on the AiServices it names);
 * - a Saga → its own reconcile, and the AiServices it names (the orchestrator's sidecar
 *   config and the step services' grants come from it);
 * - a child the operator manages → the AiService that owns it.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from '../lib/log/index.js';
import { MANAGED_BY } from '../render/index.js';
import { FIELD_MANAGER, type KubeClient } from './kube/client.js';
import { appliedFields, projectFields } from './kube/fields.js';
import { Informer, keyOf, keyOfObject } from './kube/informer.js';
import { AI_SERVICE, CHILD_TYPES, SAGA, type ResourceType } from './kube/resources.js';

export type LiveObject = KubernetesObject & {
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

/** As read from the cluster: not yet validated, so every field may be missing. */
export type LiveSaga = LiveObject & {
  spec?: {
    orchestrator?: string;
    steps?: { action?: { service?: string }; compensation?: { service?: string } }[];
  };
};

/** A read-only cache of one kind, as the reconcilers see it. */
export interface ObjectCache<T> {
  readonly type: ResourceType;
  get(namespace: string | undefined, name: string): T | undefined;
  list(): T[];
}

/** A child kind's cache, which also finds an owner's children without a scan. */
export interface ChildCache<T> extends ObjectCache<T> {
  /** The objects whose controller owner has this uid. */
  ownedBy(uid: string): T[];
}

/** What the reconcilers read: never the API server directly, always these caches. */
export interface Caches {
  readonly aiServices: ObjectCache<LiveObject>;
  readonly sagas: ObjectCache<LiveSaga>;
  /** The children's caches, by kind. */
  readonly children: ReadonlyMap<string, ChildCache<LiveObject>>;
}

/** Where the watches send keys: one function per controller. */
export interface WatchTargets {
  aiService: (key: string) => void;
  saga: (key: string) => void;
}

export interface WatchOptions {
  client: KubeClient;
  log: Logger;
  /** Watch one namespace only; all namespaces when undefined. */
  namespace?: string;
}

export class Watches implements Caches {
  readonly aiServices: Informer<LiveObject>;
  readonly sagas: Informer<LiveSaga>;
  /** The children's caches, by kind. */
  readonly children = new Map<string, Informer<LiveObject>>();
  private readonly watchChild: (type: ResourceType) => Informer<LiveObject>;

  /** `childTypes`: the kinds of children to watch from the start. */
  constructor(
    options: WatchOptions,
    targets: WatchTargets,
    childTypes: readonly ResourceType[] = CHILD_TYPES,
  ) {
    const onError = (error: unknown) => options.log.warn('watch failed; retrying', { error });
    const scope = { namespace: options.namespace, onError };
    this.aiServices = new Informer<LiveObject>(
      options.client,
      AI_SERVICE,
      (_event, aiService) => {
        targets.aiService(keyOfObject(aiService));
        for (const saga of this.sagas.list())
          if (saga.metadata.namespace === aiService.metadata.namespace) targets.saga(keyOfObject(saga));
      },
      { ...scope, transform: withoutLastApplied },
    );
    this.sagas = new Informer<LiveSaga>(
      options.client,
      SAGA,
      (_event, saga) => {
        targets.saga(keyOfObject(saga));
        for (const service of namedServices(saga)) targets.aiService(keyOf(saga.metadata.namespace, service));
      },
      { ...scope, transform: withoutLastApplied },
    );
    this.watchChild = (type) => {
      const informer = new Informer<LiveObject>(
        options.client,
        type,
        (_event, child) => {
          const owner = child.metadata.ownerReferences?.find(
            (o) => o.controller && o.kind === AI_SERVICE.kind,
          );
          if (owner) targets.aiService(keyOf(child.metadata.namespace, owner.name));
        },
        { ...scope, labelSelector: `app.kubernetes.io/managed-by=${MANAGED_BY}`, transform: trimChild },
      );
      this.children.set(type.kind, informer);
      return informer;
    };
    for (const type of childTypes) this.watchChild(type);
  }

  /**
   * Starts watching more kinds of children (Istio's, once its CRDs appear); resolves when
   * their caches hold their first list.
   */
  async watchKinds(types: readonly ResourceType[]): Promise<void> {
    for (const type of types.filter((t) => !this.children.has(t.kind))) await this.watchChild(type).start();
  }

  /** Stops watching kinds the cluster no longer serves, and forgets their objects. */
  unwatchKinds(types: readonly ResourceType[]): void {
    for (const type of types) {
      this.children.get(type.kind)?.stop();
      this.children.delete(type.kind);
    }
  }

  /**
   * Resolves once every cache holds its first list. The first lists run one after another:
   * each holds a page as text and as objects until it is trimmed, and a dozen side by side
   * raised a restart's peak RSS at 1000 AiServices from about 220 to 260 MiB. (Relists after
   * an outage stay independent, so one stuck list cannot hold back the others.)
   */
  async start(): Promise<void> {
    for (const informer of [this.aiServices, this.sagas, ...this.children.values()]) await informer.start();
  }

  stop(): void {
    this.aiServices.stop();
    this.sagas.stop();
    for (const informer of this.children.values()) informer.stop();
  }
}

/** The services a Saga names, read defensively: it may not be valid. */
function namedServices(saga: LiveSaga): string[] {
  const services = new Set<string | undefined>([saga.spec?.orchestrator]);
  for (const step of saga.spec?.steps ?? []) {
    services.add(step.action?.service);
    services.add(step.compensation?.service);
  }
  return [...services].filter((s): s is string => typeof s === 'string' && s !== '');
}

/**
 * What the reconcilers read of a child: its identity and owners, the fields the operator
 * applied (its part of managedFields: what render writes, compared with what it wants),
 * and, for a Deployment, the status that feeds the AiService's status. The API server's
 * defaults, other writers' fields, kubectl's last-applied copy and every other status are
 * never read and are not kept.
 */
export function trimChild(child: LiveObject): LiveObject {
  const fields = appliedFields(child, FIELD_MANAGER);
  const owned = (fields ? projectFields(child, fields) : {}) as Partial<LiveObject>;
  const { name, namespace, uid, resourceVersion, generation, deletionTimestamp, ownerReferences } =
    child.metadata;
  const trimmed: LiveObject = {
    ...owned,
    apiVersion: child.apiVersion,
    kind: child.kind,
    metadata: {
      ...owned.metadata,
      name,
      ...(namespace !== undefined ? { namespace } : {}),
      ...(uid !== undefined ? { uid } : {}),
      ...(resourceVersion !== undefined ? { resourceVersion } : {}),
      ...(generation !== undefined ? { generation } : {}),
      ...(deletionTimestamp !== undefined ? { deletionTimestamp } : {}),
      ...(ownerReferences !== undefined ? { ownerReferences } : {}),
    },
  };
  if (child.kind === 'Deployment' && child.status) trimmed.status = deploymentStatus(child.status);
  return trimmed;
}

/** What the AiService's status is computed from (see deploymentState in the reconciler). */
function deploymentStatus(status: Record<string, unknown>): Record<string, unknown> {
  const { observedGeneration, replicas, updatedReplicas, readyReplicas, availableReplicas } = status;
  const conditions = (status.conditions ?? []) as {
    type: string;
    status: string;
    reason?: string;
    message?: string;
  }[];
  return {
    observedGeneration,
    replicas,
    updatedReplicas,
    readyReplicas,
    availableReplicas,
    conditions: conditions.map(({ type, status, reason, message }) => ({ type, status, reason, message })),
  };
}

const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

/** AiServices and Sagas are kept whole but for kubectl's last-applied copy of their spec. */
function withoutLastApplied<T extends LiveObject>(object: T): T {
  const annotations = object.metadata.annotations as Record<string, string> | undefined;
  if (annotations?.[LAST_APPLIED] === undefined) return object;
  const kept = { ...annotations };
  delete kept[LAST_APPLIED];
  return { ...object, metadata: { ...object.metadata, annotations: kept } };
}
