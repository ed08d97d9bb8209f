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
import type { KubeClient } from './kube/client.js';
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

/** What the reconcilers read: never the API server directly, always these caches. */
export interface Caches {
  readonly aiServices: ObjectCache<LiveObject>;
  readonly sagas: ObjectCache<LiveSaga>;
  /** The children's caches, by kind. */
  readonly children: ReadonlyMap<string, ObjectCache<LiveObject>>;
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
      scope,
    );
    this.sagas = new Informer<LiveSaga>(
      options.client,
      SAGA,
      (_event, saga) => {
        targets.saga(keyOfObject(saga));
        for (const service of namedServices(saga)) targets.aiService(keyOf(saga.metadata.namespace, service));
      },
      scope,
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
    await Promise.all(types.filter((t) => !this.children.has(t.kind)).map((t) => this.watchChild(t).start()));
  }

  /** Stops watching kinds the cluster no longer serves, and forgets their objects. */
  unwatchKinds(types: readonly ResourceType[]): void {
    for (const type of types) {
      this.children.get(type.kind)?.stop();
      this.children.delete(type.kind);
    }
  }

  /** Resolves once every cache holds its first list. */
  async start(): Promise<void> {
    await Promise.all([
      this.aiServices.start(),
      this.sagas.start(),
      ...[...this.children.values()].map((i) => i.start()),
    ]);
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
 * What the reconcilers read of a child: its identity, owner, labels and annotations, and
 * the fields render writes (compared with what it wants). A Deployment's status feeds the
 * AiService's status; every other child's status, and kubectl's last-applied copy, are
 * never read and are dropped.
 */
const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

function trimChild(child: LiveObject): LiveObject {
  const { status, ...rest } = child;
  const annotations = child.metadata.annotations as Record<string, string> | undefined;
  if (annotations?.[LAST_APPLIED] !== undefined) {
    const kept = { ...annotations };
    delete kept[LAST_APPLIED];
    rest.metadata = { ...rest.metadata, annotations: kept };
  }
  return child.kind === 'Deployment' && status ? { ...rest, status } : rest;
}
