/**
 * The operator's view of the API server: list, watch, server-side apply (objects and
 * status), delete. Every write goes through here, so writes are counted in one place.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import { Agent, ProxyAgent, fetch, type Dispatcher } from 'undici';
import type { KubeCredentials, TlsSettings } from './config.js';
import { collectionPath, objectPath, type ResourceType } from './resources.js';

export const FIELD_MANAGER = 'aimesh-operator';

export interface ObjectList<T> {
  resourceVersion: string;
  items: T[];
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

/** Anything with a name and namespace can be applied; the API server checks the rest. */
export type AppliedObject = { metadata?: { name?: string; namespace?: string } };

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly reason?: string,
  ) {
    super(message);
  }
}

export interface KubeClientOptions {
  /** Called for every mutating request, with its verb and kind. */
  onWrite?: (verb: string, kind: string) => void;
}

/** The writes a reconciler makes; reconcilers depend on this, so tests can give them a fake. */
export type ChildWriter = Pick<KubeClient, 'apply' | 'applyStatus' | 'delete'>;

export class KubeClient {
  private readonly server: string;
  /** The one connection pool every request shares, and the TLS settings it was made for. */
  private pool?: { tls: TlsSettings; dispatcher: Dispatcher };

  constructor(
    private readonly credentials: KubeCredentials,
    private readonly options: KubeClientOptions = {},
  ) {
    this.server = credentials.server;
  }

  /** The API server's version (gitVersion, e.g. v1.36.3). */
  async serverVersion(): Promise<string> {
    return ((await this.request('GET', '/version')) as { gitVersion: string }).gitVersion;
  }

  /**
   * Lists a kind page by page; `each` trims every item as its page arrives, so only trimmed
   * objects pile up, not a whole kind as the API server sends it.
   */
  async list<T extends KubernetesObject>(
    type: ResourceType,
    query: { namespace?: string; labelSelector?: string } = {},
    each: (item: T) => T = (item) => item,
  ): Promise<ObjectList<T>> {
    const items: T[] = [];
    let resourceVersion: string;
    let continueToken: string | undefined;
    do {
      const page = (await this.request('GET', collectionPath(type, query.namespace), {
        query: { labelSelector: query.labelSelector, limit: '250', continue: continueToken },
      })) as { metadata: { resourceVersion: string; continue?: string }; items: T[] };
      for (const item of page.items)
        items.push(each({ ...item, apiVersion: type.apiVersion, kind: type.kind }));
      resourceVersion = page.metadata.resourceVersion;
      continueToken = page.metadata.continue || undefined;
    } while (continueToken);
    return { resourceVersion, items };
  }

  /**
   * The types among these that the API server does not serve now, from discovery (which
   * every authenticated user may read): a CRD that is not installed, or a group removed.
   */
  async unserved(types: readonly ResourceType[]): Promise<ResourceType[]> {
    const missing: ResourceType[] = [];
    const byGroupVersion = new Map<string, ResourceType[]>();
    for (const type of types)
      byGroupVersion.set(type.apiVersion, [...(byGroupVersion.get(type.apiVersion) ?? []), type]);
    for (const [groupVersion, group] of byGroupVersion) {
      const path = groupVersion.includes('/') ? `/apis/${groupVersion}` : `/api/${groupVersion}`;
      let served: Set<string>;
      try {
        const list = (await this.request('GET', path)) as { resources?: { name: string }[] };
        served = new Set((list.resources ?? []).map((r) => r.name));
      } catch (error) {
        if (error instanceof ApiError && error.status === 404) served = new Set();
        else throw error;
      }
      missing.push(...group.filter((t) => !served.has(t.plural)));
    }
    return missing;
  }

  /**
   * Starts a watch; `done` is called once when it ends, for whatever reason: with nothing
   * when the server ended it (its timeout) or it went quiet longer than the connection's
   * body timeout, so the caller re-watches from the last resourceVersion; with the error
   * otherwise. Like client-go, the server is asked to end it after 5 to 10 minutes, so
   * watches are spread out over time and re-established on a fresh connection.
   */
  async watch(
    type: ResourceType,
    query: { namespace?: string; labelSelector?: string; resourceVersion: string },
    onEvent: (type: WatchEventType, object: KubernetesObject) => void,
    done: (error: unknown) => void,
  ): Promise<{ abort: () => void }> {
    const url = new URL(this.server + collectionPath(type, query.namespace));
    url.searchParams.set('watch', 'true');
    url.searchParams.set('allowWatchBookmarks', 'true');
    url.searchParams.set('resourceVersion', query.resourceVersion);
    url.searchParams.set('timeoutSeconds', String(300 + Math.floor(Math.random() * 300)));
    if (query.labelSelector) url.searchParams.set('labelSelector', query.labelSelector);
    const aborter = new AbortController();
    const { headers, dispatcher } = await this.connection();
    const response = await fetch(url, {
      headers: { ...headers, accept: 'application/json', 'accept-encoding': 'identity' },
      signal: aborter.signal,
      dispatcher: dispatcher as never,
    });
    if (!response.ok || !response.body) {
      const status = parseJson(await response.text()) as { message?: string; reason?: string } | undefined;
      throw new ApiError(
        response.status,
        `watch ${url.pathname}: ${status?.message ?? response.statusText}`,
        status?.reason,
      );
    }
    const body = response.body;
    void (async () => {
      // One JSON object per line; a chunk may end in the middle of one.
      const decoder = new TextDecoder();
      let pending = '';
      try {
        for await (const chunk of body) {
          pending += decoder.decode(chunk as Uint8Array, { stream: true });
          let newline: number;
          while ((newline = pending.indexOf('\n')) >= 0) {
            const line = pending.slice(0, newline);
            pending = pending.slice(newline + 1);
            if (!line.trim()) continue;
            const event = JSON.parse(line) as { type: WatchEventType; object: KubernetesObject };
            onEvent(event.type, event.object);
          }
        }
        done(undefined);
      } catch (error) {
        done(aborter.signal.aborted || isBodyTimeout(error) ? undefined : error);
      }
    })();
    return { abort: () => aborter.abort() };
  }

  async get<T extends KubernetesObject>(
    type: ResourceType,
    namespace: string,
    name: string,
  ): Promise<T | undefined> {
    try {
      return (await this.request('GET', objectPath(type, namespace, name))) as T;
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return undefined;
      throw error;
    }
  }

  /** Server-side apply with our field manager, taking over conflicting fields. */
  async apply(type: ResourceType, object: AppliedObject): Promise<KubernetesObject> {
    this.options.onWrite?.('apply', type.kind);
    const { namespace = '', name = '' } = object.metadata ?? {};
    return (await this.request('PATCH', objectPath(type, namespace, name), {
      query: { fieldManager: FIELD_MANAGER, force: 'true' },
      body: object,
      contentType: 'application/apply-patch+yaml',
    })) as KubernetesObject;
  }

  /** Server-side apply of the status subresource only. */
  async applyStatus(type: ResourceType, namespace: string, name: string, status: unknown): Promise<void> {
    this.options.onWrite?.('apply-status', type.kind);
    await this.request('PATCH', `${objectPath(type, namespace, name)}/status`, {
      query: { fieldManager: FIELD_MANAGER, force: 'true' },
      body: { apiVersion: type.apiVersion, kind: type.kind, metadata: { name, namespace }, status },
      contentType: 'application/apply-patch+yaml',
    });
  }

  async create<T extends KubernetesObject>(type: ResourceType, object: T): Promise<T> {
    this.options.onWrite?.('create', type.kind);
    return (await this.request('POST', collectionPath(type, object.metadata?.namespace), {
      body: object,
    })) as T;
  }

  async replace<T extends KubernetesObject>(type: ResourceType, object: T): Promise<T> {
    this.options.onWrite?.('update', type.kind);
    const { namespace = '', name = '' } = object.metadata ?? {};
    return (await this.request('PUT', objectPath(type, namespace, name), { body: object })) as T;
  }

  async delete(type: ResourceType, namespace: string, name: string, uid?: string): Promise<void> {
    this.options.onWrite?.('delete', type.kind);
    try {
      await this.request('DELETE', objectPath(type, namespace, name), {
        body: { propagationPolicy: 'Background', ...(uid ? { preconditions: { uid } } : {}) },
      });
    } catch (error) {
      if (error instanceof ApiError && (error.status === 404 || error.status === 409)) return;
      throw error;
    }
  }

  private async request(
    method: string,
    path: string,
    options: { query?: Record<string, string | undefined>; body?: unknown; contentType?: string } = {},
  ): Promise<unknown> {
    const url = new URL(this.server + path);
    for (const [key, value] of Object.entries(options.query ?? {}))
      if (value !== undefined) url.searchParams.set(key, value);
    const { headers, dispatcher } = await this.connection();
    const response = await fetch(url, {
      method,
      headers: {
        ...headers,
        accept: 'application/json',
        // The API server gzips large answers (lists) when asked; inflating them runs on
        // libuv's threads, whose malloc arenas then keep the freed memory. The API server is
        // near (in the cluster), so uncompressed costs bandwidth, not time.
        'accept-encoding': 'identity',
        ...(options.body !== undefined ? { 'content-type': options.contentType ?? 'application/json' } : {}),
      },
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      dispatcher: dispatcher as never,
    });
    const text = await response.text();
    // Paths the server does not serve at all (a kind whose CRD is not installed) answer
    // 404 with a plain-text body, not a Status object.
    const parsed = parseJson(text);
    if (!response.ok) {
      const status = parsed as { message?: string; reason?: string } | undefined;
      const message =
        response.status === 404 && status?.reason === undefined
          ? `the API server does not serve ${path.split('?')[0]}: is the CRD of this kind installed?`
          : (status?.message ?? response.statusText);
      throw new ApiError(response.status, `${method} ${path}: ${message}`, status?.reason ?? 'NotServed');
    }
    if (text && parsed === undefined)
      throw new ApiError(response.status, `${method} ${path}: answer is not JSON`);
    return parsed;
  }

  /**
   * Authentication headers and TLS settings are asked for before every request, since
   * tokens and certificates rotate; the connection pool is made once per distinct TLS
   * setting and shared. (client-node's applySecurityAuthentication built a new undici
   * Agent for every call, so each request opened its own TLS connection: a handshake, a CA
   * parse and buffers per request.)
   */
  private async connection(): Promise<{ headers: Record<string, string>; dispatcher?: Dispatcher }> {
    const { headers, tls } = await this.credentials.current();
    if (!this.pool || !sameTls(this.pool.tls, tls)) {
      const previous = this.pool?.dispatcher;
      const proxy = this.credentials.proxy;
      const dispatcher = proxy
        ? new ProxyAgent({ uri: proxy, requestTls: tls })
        : new Agent({ connect: tls, ...WATCH_FRIENDLY_TIMEOUTS });
      this.pool = { tls, dispatcher };
      // In-flight requests on the old pool finish; it takes no new ones.
      void previous?.close().catch(() => undefined);
    }
    return { headers, dispatcher: this.pool.dispatcher };
  }
}

/** Whether two TLS settings are the same: a rotated CA or client certificate is not. */
function sameTls(a: TlsSettings, b: TlsSettings): boolean {
  const same = (x: unknown, y: unknown) => (Buffer.isBuffer(x) && Buffer.isBuffer(y) ? x.equals(y) : x === y);
  return (
    same(a.ca, b.ca) &&
    same(a.cert, b.cert) &&
    same(a.key, b.key) &&
    a.rejectUnauthorized === b.rejectUnauthorized &&
    a.servername === b.servername
  );
}

/**
 * A watch may be quiet for minutes (bookmarks come about once a minute); undici's default
 * body timeout (5 min) would cut it, which the watch takes as a clean end and re-opens.
 */
const WATCH_FRIENDLY_TIMEOUTS = { bodyTimeout: 10 * 60_000 };

function isBodyTimeout(error: unknown): boolean {
  const code = (error as { code?: string; cause?: { code?: string } }).code;
  const cause = (error as { cause?: { code?: string } }).cause?.code;
  return code === 'UND_ERR_BODY_TIMEOUT' || cause === 'UND_ERR_BODY_TIMEOUT';
}

function parseJson(text: string): unknown {
  if (!text) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
