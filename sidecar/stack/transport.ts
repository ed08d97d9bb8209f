/**
 * The stack's I/O edge: connections to endpoints. HTTP/1.1 goes through a keep-alive
 * connection pool per origin (lib/http-client, Node's own client), gRPC through one HTTP/2
 * (h2c) session per origin; both are reused across requests and closed when their endpoint
 * leaves discovery.
 */
import { connect, constants, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import { AimeshError } from '../../lib/errors/index.js';
import { OriginClient } from '../../lib/http-client/index.js';
import type { Logger } from '../../lib/log/index.js';
import type {
  CallSignal,
  Headers,
  StackEndpoint,
  Transport,
  TransportResponse,
  TryRequest,
  Upgraded,
  UpgradeRequest,
} from './types.js';

export interface PoolOptions {
  connectionsPerEndpoint?: number;
  connectTimeoutMs?: number;
  /** Where failures to close a departed endpoint's connections are reported. */
  log?: Logger;
}

export class HttpTransport implements Transport {
  private readonly pools = new Map<string, OriginClient>();

  constructor(private readonly options: PoolOptions = {}) {}

  async send(endpoint: StackEndpoint, request: TryRequest): Promise<TransportResponse> {
    const response = await this.pool(endpoint.origin).request({
      method: request.method,
      path: request.path,
      headers: request.headers,
      body: request.body,
      signal: request.signal,
      ...(request.headersTimeoutMs === undefined ? {} : { headersTimeoutMs: request.headersTimeoutMs }),
    });
    return { status: response.statusCode ?? 0, headers: response.headers, body: response };
  }

  /** The upgraded connection leaves the pool: it belongs to the caller from then on. */
  async upgrade(
    endpoint: StackEndpoint,
    request: UpgradeRequest & { signal: CallSignal },
  ): Promise<Omit<Upgraded, 'endpoint'>> {
    return this.pool(endpoint.origin).upgrade({
      method: request.method,
      path: request.path,
      headers: request.headers,
      protocol: request.protocol,
      signal: request.signal,
    });
  }

  retain(keep: ReadonlySet<string>): void {
    for (const [origin, pool] of this.pools) {
      if (keep.has(origin)) continue;
      this.pools.delete(origin);
      // close() lets requests in flight finish.
      pool
        .close()
        .catch((error: unknown) =>
          this.options.log?.warn('closing connections to a departed endpoint failed', { origin, error }),
        );
    }
  }

  async close(): Promise<void> {
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(pools.map((p) => p.close()));
  }

  private pool(origin: string): OriginClient {
    let pool = this.pools.get(origin);
    if (!pool) {
      // The stack's deadline bounds the exchange; a stream without one (SSE) may run long.
      pool = new OriginClient(origin, {
        connections: this.options.connectionsPerEndpoint ?? 64,
        connectTimeoutMs: this.options.connectTimeoutMs ?? 2000,
        keepAliveTimeoutMs: 30_000,
      });
      this.pools.set(origin, pool);
    }
    return pool;
  }
}

/** UNAVAILABLE and DEADLINE_EXCEEDED count against the endpoint; other codes are the app's answer. */
const FAILED_GRPC_STATUSES = new Set(['4', '14']);

/**
 * gRPC over h2c: the request streams up, the response streams down, and its status comes
 * in trailers, so the exchange is `settled` only at its end.
 */
export class H2Transport implements Transport {
  private readonly sessions = new Map<string, ClientHttp2Session>();

  send(endpoint: StackEndpoint, request: TryRequest): Promise<TransportResponse> {
    return new Promise((resolve, reject) => {
      const { host, ...headers } = request.headers;
      const stream = this.session(endpoint.origin).request({
        ...headers,
        ':method': request.method,
        ':path': request.path,
        ':authority': String(host ?? endpoint.id),
      } as Headers);
      let failed = false;
      let answered = false;
      let settle: (ok: boolean) => void = () => undefined;
      const settled = new Promise<boolean>((done) => (settle = done));
      const onAbort = () => {
        const reason = request.signal.reason ?? new AimeshError('upstream.failed', 'call cancelled');
        stream.close(constants.NGHTTP2_CANCEL);
        if (answered) stream.destroy(reason);
        else reject(reason);
      };
      if (request.signal.isAborted) return onAbort();
      request.signal.once('abort', onAbort);
      stream.once('close', () => {
        request.signal.off('abort', onAbort);
        settle(!failed && stream.rstCode === constants.NGHTTP2_NO_ERROR);
      });
      stream.once('response', (headers) => {
        answered = true;
        const status = Number(headers[constants.HTTP2_HEADER_STATUS]);
        if (status >= 500 || FAILED_GRPC_STATUSES.has(String(headers['grpc-status']))) failed = true;
        resolve({ status, headers, body: stream, settled });
      });
      stream.on('trailers', (trailers) => {
        if (FAILED_GRPC_STATUSES.has(String(trailers['grpc-status']))) failed = true;
      });
      stream.once('error', (error) => {
        failed = true;
        if (!answered) reject(error);
      });
      sendBody(stream, request.body);
    });
  }

  retain(keep: ReadonlySet<string>): void {
    for (const [origin, session] of this.sessions) {
      if (keep.has(origin)) continue;
      this.sessions.delete(origin);
      session.close();
    }
  }

  async close(): Promise<void> {
    for (const session of this.sessions.values()) session.close();
    this.sessions.clear();
  }

  private session(origin: string): ClientHttp2Session {
    const existing = this.sessions.get(origin);
    if (existing && !existing.closed && !existing.destroyed) return existing;
    const session = connect(origin);
    // A session error also fails its streams, which report it to their callers.
    session.on('error', () => this.sessions.delete(origin));
    session.on('close', () => this.sessions.delete(origin));
    session.unref();
    this.sessions.set(origin, session);
    return session;
  }
}

function sendBody(stream: ClientHttp2Stream, body: TryRequest['body']): void {
  if (body === null) stream.end();
  else if (Buffer.isBuffer(body)) stream.end(body);
  else body.pipe(stream);
}

/** scheme://host:port, with IPv6 addresses bracketed. */
export function originOf(address: string, port: number, scheme = 'http'): string {
  return `${scheme}://${address.includes(':') ? `[${address}]` : address}:${port}`;
}
