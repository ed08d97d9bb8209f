/**
 * A list-then-watch cache of one kind, level-triggered like client-go's reflector:
 * - a watch that ends cleanly (the server's timeout, a quiet connection) is re-opened
 *   from the last resourceVersion (bookmarks keep it fresh);
 * - any other failure (410 Gone, API server down or restarted) backs off and relists,
 *   reporting objects that changed or vanished meanwhile, so no change is missed.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import type { KubeClient } from './client.js';
import type { ResourceType } from './resources.js';

export type InformerEvent = 'added' | 'updated' | 'deleted';
export type InformerHandler<T> = (event: InformerEvent, object: T) => void;

export interface InformerOptions<T extends KubernetesObject = KubernetesObject> {
  namespace?: string;
  labelSelector?: string;
  /** Told about watch failures, so they reach the logs and metrics. */
  onError?: (error: unknown) => void;
  /**
   * Trims each object before it is cached (controller-runtime's cache transforms): keep
   * what the controller reads, drop the rest, so memory follows what is compared.
   */
  transform?: (object: T) => T;
}

const MIN_BACKOFF_MS = 200;
const MAX_BACKOFF_MS = 30_000;

export class Informer<T extends KubernetesObject> {
  private readonly store = new Map<string, T>();
  /** Keys by the uid of their controller owner, so finding an owner's objects is not a scan. */
  private readonly byOwner = new Map<string, Set<string>>();
  private resourceVersion = '';
  private stopped = false;
  private current?: { abort: () => void };
  private backoffMs = MIN_BACKOFF_MS;
  private retryTimer?: NodeJS.Timeout;
  private syncedOnce?: Promise<void>;

  constructor(
    private readonly client: KubeClient,
    readonly type: ResourceType,
    private readonly handler: InformerHandler<T>,
    private readonly options: InformerOptions<T> = {},
  ) {}

  /**
   * Lists, starts watching, and resolves once the first list is in the cache. A failing
   * first list (API server starting, a CRD's storage still initializing) is retried with
   * backoff; stop() ends the attempts.
   */
  start(): Promise<void> {
    this.syncedOnce ??= this.firstSync();
    return this.syncedOnce;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.current?.abort();
  }

  get(namespace: string | undefined, name: string): T | undefined {
    return this.store.get(keyOf(namespace, name));
  }

  list(): T[] {
    return [...this.store.values()];
  }

  /** The objects whose controller owner (ownerReferences with controller: true) has this uid. */
  ownedBy(uid: string): T[] {
    const keys = this.byOwner.get(uid);
    if (!keys) return [];
    return [...keys].flatMap((key) => {
      const object = this.store.get(key);
      return object ? [object] : [];
    });
  }

  private async firstSync(): Promise<void> {
    for (;;) {
      try {
        return await this.relist();
      } catch (error) {
        if (this.stopped) throw error;
        this.options.onError?.(error);
        await new Promise((resolve) => (this.retryTimer = setTimeout(resolve, this.nextBackoff())));
      }
    }
  }

  private async relist(): Promise<void> {
    const { resourceVersion, items } = await this.client.list<T>(this.type, this.options, (item) =>
      this.trim(item),
    );
    const seen = new Set<string>();
    for (const item of items) {
      const key = keyOfObject(item);
      seen.add(key);
      this.upsert(key, item);
    }
    for (const [key, object] of this.store) {
      if (seen.has(key)) continue;
      this.remove(key, object);
      this.handler('deleted', object);
    }
    this.resourceVersion = resourceVersion;
    this.backoffMs = MIN_BACKOFF_MS;
    await this.watch();
  }

  private async watch(): Promise<void> {
    if (this.stopped) return;
    let relistNeeded = false;
    const handle = await this.client
      .watch(
        this.type,
        { ...this.options, resourceVersion: this.resourceVersion },
        (eventType, object) => {
          if (eventType === 'ERROR') {
            // The API server reports "too old resource version" (410) as an ERROR event.
            relistNeeded = true;
            return;
          }
          const version = object.metadata?.resourceVersion;
          if (version) this.resourceVersion = version;
          if (eventType === 'BOOKMARK') return;
          const typed = { ...object, apiVersion: this.type.apiVersion, kind: this.type.kind } as T;
          const key = keyOfObject(typed);
          if (eventType === 'DELETED') {
            this.remove(key, this.store.get(key));
            this.handler('deleted', typed);
          } else {
            this.upsert(key, this.trim(typed));
          }
        },
        (error) => {
          if (this.stopped) return;
          if (!relistNeeded && (error === null || error === undefined)) {
            this.retry(() => this.watch(), 0);
          } else {
            if (error) this.options.onError?.(error);
            this.retry(() => this.relist(), this.nextBackoff());
          }
        },
      )
      .catch((error: unknown) => {
        this.options.onError?.(error);
        this.retry(() => this.relist(), this.nextBackoff());
        return undefined;
      });
    if (handle) this.current = handle;
  }

  /** What the cache keeps of an object: the transform's part, never managedFields. */
  private trim(object: T): T {
    if (this.options.transform) object = this.options.transform(object);
    // managedFields are often the largest part of an object and the controller never reads
    // them past the transform (controller-runtime drops them from its cache too).
    if (object.metadata?.managedFields) delete object.metadata.managedFields;
    return object;
  }

  /** Stores an object already trimmed. */
  private upsert(key: string, object: T): void {
    const previous = this.store.get(key);
    const owner = controllerUid(object);
    if (previous && controllerUid(previous) !== owner) this.unindex(key, previous);
    if (owner) this.byOwner.set(owner, (this.byOwner.get(owner) ?? new Set()).add(key));
    this.store.set(key, object);
    if (!previous) this.handler('added', object);
    else if (previous.metadata?.resourceVersion !== object.metadata?.resourceVersion)
      this.handler('updated', object);
  }

  private remove(key: string, object: T | undefined): void {
    this.store.delete(key);
    if (object) this.unindex(key, object);
  }

  private unindex(key: string, object: T): void {
    const owner = controllerUid(object);
    const keys = owner ? this.byOwner.get(owner) : undefined;
    keys?.delete(key);
    if (owner && keys?.size === 0) this.byOwner.delete(owner);
  }

  private retry(action: () => Promise<void>, delayMs: number): void {
    if (this.stopped) return;
    this.retryTimer = setTimeout(() => {
      action().catch((error: unknown) => {
        this.options.onError?.(error);
        this.retry(action, this.nextBackoff());
      });
    }, delayMs);
  }

  private nextBackoff(): number {
    const delay = this.backoffMs * (0.5 + Math.random() / 2);
    this.backoffMs = Math.min(this.backoffMs * 2, MAX_BACKOFF_MS);
    return delay;
  }
}

export function keyOf(namespace: string | undefined, name: string): string {
  return namespace ? `${namespace}/${name}` : name;
}

export function keyOfObject(object: KubernetesObject): string {
  return keyOf(object.metadata?.namespace, object.metadata?.name ?? '');
}

function controllerUid(object: KubernetesObject): string | undefined {
  return object.metadata?.ownerReferences?.find((o) => o.controller)?.uid;
}
