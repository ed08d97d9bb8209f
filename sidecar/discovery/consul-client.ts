/**
 * The few Consul agent HTTP API calls the sidecar makes, over keep-alive connections
 * (lib/http-client).
 * Blocking queries return the X-Consul-Index so callers can wait for the next change.
 */
import { readFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { durationMs, type SidecarConfig } from '../../api/index.js';
import { headerValue, queryValue } from '../../lib/encode/index.js';
import { AimeshError, describe } from '../../lib/errors/index.js';
import { OriginClient, readText } from '../../lib/http-client/index.js';

export interface ConsulServiceRegistration {
  ID: string;
  Name: string;
  Address: string;
  Port: number;
  Tags: string[];
  Meta: Record<string, string>;
  Check?: {
    HTTP?: string;
    GRPC?: string;
    TTL?: string;
    Interval?: string;
    Timeout?: string;
    DeregisterCriticalServiceAfter: string;
  };
}

export interface HealthEntry {
  Service: {
    ID: string;
    Service: string;
    Address: string;
    Port: number;
    Meta: Record<string, string> | null;
    Tags: string[] | null;
  };
  Node: { Address: string };
}

/** One operation of a Consul transaction (/v1/txn); `Value` is base64. */
export interface ConsulTxnOp {
  KV: {
    Verb: 'set' | 'cas' | 'get' | 'delete' | 'delete-cas' | 'lock' | 'unlock';
    Key: string;
    Value?: string;
    Index?: number;
    Session?: string;
  };
}

/** A transaction either applies every operation (with each key's new ModifyIndex) or none. */
export type ConsulTxnResult =
  | { ok: true; results: { key: string; modifyIndex: number }[] }
  | { ok: false; errors: { opIndex: number; what: string }[] };

/** How to reach Consul besides its address: the sidecar config's discovery.consul fields. */
export interface ConsulConnectionSettings {
  /** An ACL token given directly (tests, `aimesh run`). */
  token?: string;
  /** A file holding the ACL token, mounted from a Secret; re-read so a rotated token is used. */
  tokenFile?: string;
  /** PEM CA to verify an https:// address with. */
  caFile?: string;
  /** Name to verify in the server certificate. */
  tlsServerName?: string;
  /** Datacenter for catalog, health, KV, session and transaction calls. */
  datacenter?: string;
}

/** Calls that take a datacenter (the agent's own endpoints do not). */
const DATACENTER_SCOPED = /^\/v1\/(health|catalog|kv|txn|session)\//;
/** A rotated token file is picked up within this long. */
const TOKEN_FILE_REFRESH_MS = 10_000;

export class ConsulClient {
  private readonly base: string;
  /** Path prefix of the address (an API behind a path), before each call's path. */
  private readonly basePath: string;
  private readonly connections: OriginClient;
  private tokenRead?: { value: string | undefined; at: number };

  /** `address` is host:port or http(s)://host:port of a Consul agent's or server's HTTP API. */
  constructor(
    address: string,
    private readonly settings: ConsulConnectionSettings = {},
  ) {
    this.base = address.startsWith('http') ? address : `http://${address}`;
    const url = new URL(this.base);
    this.basePath = url.pathname.replace(/\/$/, '');
    this.connections = new OriginClient(url.origin, {
      connections: 8,
      connectTimeoutMs: 5_000,
      keepAliveTimeoutMs: 30_000,
      ...(settings.caFile ? { ca: readFileSync(settings.caFile) } : {}),
      ...(settings.tlsServerName ? { servername: settings.tlsServerName } : {}),
    });
  }

  /** The ACL token: given, or read from its file (missing file: an error, never no token). */
  private token(): string | undefined {
    if (this.settings.token) return this.settings.token;
    const file = this.settings.tokenFile;
    if (!file) return undefined;
    const now = Date.now();
    if (this.tokenRead && now - this.tokenRead.at < TOKEN_FILE_REFRESH_MS) return this.tokenRead.value;
    let value: string;
    try {
      value = readFileSync(file, 'utf8').trim();
    } catch (error) {
      throw new AimeshError(
        'dependency.failed',
        `cannot read the Consul ACL token from ${file}: ${describe(error)}`,
        {
          cause: error,
        },
      );
    }
    this.tokenRead = { value, at: now };
    return value;
  }

  /** Passing instances of a service; waits up to `wait` for a change after `index`. */
  async passingInstances(
    service: string,
    index: number,
    wait: string,
    signal?: AbortSignal,
  ): Promise<{ index: number; entries: HealthEntry[] }> {
    const query = new URLSearchParams({ passing: 'true', wait });
    if (index > 0) query.set('index', String(index));
    const response = await this.call('GET', `/v1/health/service/${encodeURIComponent(service)}?${query}`, {
      signal,
      // Consul adds up to wait/16 of jitter; allow for it and for the network.
      timeoutMs: durationMs(wait) * 1.1 + 5_000,
    });
    const header = response.headers['x-consul-index'];
    return {
      index: Number(Array.isArray(header) ? header[0] : header) || 0,
      entries: response.body as HealthEntry[],
    };
  }

  async register(registration: ConsulServiceRegistration): Promise<void> {
    await this.call('PUT', '/v1/agent/service/register?replace-existing-checks=true', { body: registration });
  }

  /** Whether the local agent still has this service registered. */
  async hasService(serviceId: string): Promise<boolean> {
    try {
      await this.call('GET', `/v1/agent/service/${encodeURIComponent(serviceId)}`, {});
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  async deregister(serviceId: string): Promise<void> {
    await this.call('PUT', `/v1/agent/service/deregister/${encodeURIComponent(serviceId)}`, {});
  }

  /** Marks a TTL check passing (or warning/critical) with a note. */
  async updateTtl(
    checkId: string,
    status: 'passing' | 'warning' | 'critical',
    output: string,
  ): Promise<void> {
    await this.call('PUT', `/v1/agent/check/update/${encodeURIComponent(checkId)}`, {
      body: { Status: status, Output: output },
    });
  }

  /** A KV entry with its ModifyIndex (for check-and-set), or undefined. */
  async kvGet(key: string): Promise<{ value: string; modifyIndex: number; session?: string } | undefined> {
    try {
      const { body } = await this.call('GET', `/v1/kv/${key}`, {});
      const entry = (body as { Value: string | null; ModifyIndex: number; Session?: string }[])[0];
      if (!entry) return undefined;
      return {
        value: entry.Value ? Buffer.from(entry.Value, 'base64').toString('utf8') : '',
        modifyIndex: entry.ModifyIndex,
        ...(entry.Session ? { session: entry.Session } : {}),
      };
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  /** Every entry under a prefix. */
  async kvList(prefix: string): Promise<{ key: string; value: string; modifyIndex: number }[]> {
    try {
      const { body } = await this.call('GET', `/v1/kv/${prefix}?recurse=true`, {});
      return (body as { Key: string; Value: string | null; ModifyIndex: number }[]).map((e) => ({
        key: e.Key,
        value: e.Value ? Buffer.from(e.Value, 'base64').toString('utf8') : '',
        modifyIndex: e.ModifyIndex,
      }));
    } catch (error) {
      if (isNotFound(error)) return [];
      throw error;
    }
  }

  /**
   * Writes a KV entry. `cas` 0 creates only if absent; a ModifyIndex writes only if unchanged.
   * `acquire`/`release` take or give back a session lock. Returns whether it was written.
   */
  async kvPut(
    key: string,
    value: string,
    options: { cas?: number; acquire?: string; release?: string } = {},
  ): Promise<boolean> {
    const query = new URLSearchParams();
    if (options.cas !== undefined) query.set('cas', String(options.cas));
    if (options.acquire) query.set('acquire', options.acquire);
    if (options.release) query.set('release', options.release);
    const { body } = await this.call('PUT', `/v1/kv/${key}?${query}`, { rawBody: value });
    return body === true;
  }

  /** Applies the operations atomically; a failed check (e.g. a CAS index) rolls all back. */
  async txn(ops: ConsulTxnOp[]): Promise<ConsulTxnResult> {
    const { status, body } = await this.call('PUT', '/v1/txn', { body: ops, rolledBackStatus: 409 });
    const reply = body as {
      Results: { KV: { Key: string; ModifyIndex: number } }[] | null;
      Errors: { OpIndex: number; What: string }[] | null;
    };
    if (status === 409)
      return { ok: false, errors: (reply.Errors ?? []).map((e) => ({ opIndex: e.OpIndex, what: e.What })) };
    return {
      ok: true,
      results: (reply.Results ?? []).map((r) => ({ key: r.KV.Key, modifyIndex: r.KV.ModifyIndex })),
    };
  }

  /** A session that holds locks while it is renewed; its locks are released when it lapses. */
  async sessionCreate(name: string, ttl: string, lockDelay = '1s'): Promise<string> {
    const { body } = await this.call('PUT', '/v1/session/create', {
      body: { Name: name, TTL: ttl, LockDelay: lockDelay, Behavior: 'release' },
    });
    return (body as { ID: string }).ID;
  }

  async sessionRenew(id: string): Promise<boolean> {
    try {
      await this.call('PUT', `/v1/session/renew/${id}`, {});
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  async sessionDestroy(id: string): Promise<void> {
    await this.call('PUT', `/v1/session/destroy/${id}`, {});
  }

  async close(): Promise<void> {
    await this.connections.close();
  }

  private async call(
    method: 'GET' | 'PUT',
    path: string,
    options: {
      body?: unknown;
      rawBody?: string;
      signal?: AbortSignal;
      timeoutMs?: number;
      /** A status that carries a normal answer (a rolled-back transaction), not an error. */
      rolledBackStatus?: number;
    },
  ): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: unknown }> {
    const token = this.token();
    const datacenter = this.settings.datacenter;
    const target =
      datacenter && DATACENTER_SCOPED.test(path)
        ? `${this.basePath}${path}${path.includes('?') ? '&' : '?'}dc=${queryValue(datacenter)}`
        : `${this.basePath}${path}`;
    const timeoutMs = options.timeoutMs ?? 10_000;
    let status: number;
    let headers: IncomingHttpHeaders;
    let text: string;
    try {
      const response = await this.connections.request({
        method,
        path: target,
        headers: {
          ...(token ? { 'x-consul-token': headerValue(token, 'Consul ACL token') } : {}),
          ...(options.body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: options.rawBody ?? (options.body === undefined ? undefined : JSON.stringify(options.body)),
        ...(options.signal ? { signal: options.signal } : {}),
        headersTimeoutMs: timeoutMs,
      });
      status = response.statusCode ?? 0;
      headers = response.headers;
      text = await readText(response, timeoutMs, `Consul ${method} ${path.split('?')[0]}`);
    } catch (error) {
      throw new AimeshError('dependency.failed', `Consul at ${this.base} unreachable: ${describe(error)}`, {
        cause: error,
      });
    }
    if (status >= 300 && status !== options.rolledBackStatus) {
      // Consul says only "Permission denied" and the rule it missed; say that the token is why.
      const refused = status === 403 ? ' (the ACL token lacks this permission)' : '';
      throw new AimeshError(
        'dependency.failed',
        `Consul ${method} ${path.split('?')[0]}: ${status} ${text.trim()}${refused}`,
        { details: { consulStatus: status } },
      );
    }
    return { status, headers, body: text ? (JSON.parse(text) as unknown) : undefined };
  }
}

/** Consul refused the ACL token (403), or a transaction operation for lack of permission. */
export function isPermissionDenied(error: unknown): boolean {
  return error instanceof AimeshError && error.details.consulStatus === 403;
}

/** Consul answered 404: the key, session or service is not there. */
function isNotFound(error: unknown): boolean {
  return error instanceof AimeshError && error.details.consulStatus === 404;
}

/**
 * The one way the sidecar builds a Consul client (discovery, registration, the saga store):
 * the address from the flag (`address`) or the config, and the token, CA, server name and
 * datacenter from the config.
 */
export function consulClientFor(config: SidecarConfig, address?: string): ConsulClient {
  const consul = config.discovery.consul;
  return new ConsulClient(address ?? consul.address, {
    ...(consul.tokenFile ? { tokenFile: consul.tokenFile } : {}),
    ...(consul.caFile ? { caFile: consul.caFile } : {}),
    ...(consul.tlsServerName ? { tlsServerName: consul.tlsServerName } : {}),
    ...(consul.datacenter ? { datacenter: consul.datacenter } : {}),
  });
}
