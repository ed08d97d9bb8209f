/**
 * Connections to upstream endpoints: an undici keep-alive Pool per HTTP/1.1 endpoint and
 * one HTTP/2 session per h2c (gRPC) endpoint, reused across requests and closed when the
 * endpoint leaves discovery.
 */
import { connect, type ClientHttp2Session } from 'node:http2';
import { Pool } from 'undici';

export class ConnectionPools {
  private readonly http1 = new Map<string, Pool>();
  private readonly http2 = new Map<string, ClientHttp2Session>();

  constructor(
    private readonly options: { connectionsPerEndpoint?: number; connectTimeoutMs?: number } = {},
  ) {}

  pool(address: string, port: number): Pool {
    const key = `${address}:${port}`;
    let pool = this.http1.get(key);
    if (!pool) {
      pool = new Pool(`http://${hostPort(address, port)}`, {
        connections: this.options.connectionsPerEndpoint ?? 64,
        connect: { timeout: this.options.connectTimeoutMs ?? 2000 },
        keepAliveTimeout: 30_000,
        // Streams (SSE, long polls) have no body timeout of their own; the route's timeout applies.
        bodyTimeout: 0,
        headersTimeout: 0,
      });
      this.http1.set(key, pool);
    }
    return pool;
  }

  session(address: string, port: number): ClientHttp2Session {
    const key = `${address}:${port}`;
    const existing = this.http2.get(key);
    if (existing && !existing.closed && !existing.destroyed) return existing;
    const session = connect(`http://${hostPort(address, port)}`);
    session.on('error', () => this.http2.delete(key));
    session.on('close', () => this.http2.delete(key));
    session.unref();
    this.http2.set(key, session);
    return session;
  }

  /** Closes connections to endpoints not in `keep` (address:port keys). */
  retain(keep: Set<string>): void {
    for (const [key, pool] of this.http1) {
      if (!keep.has(key)) {
        this.http1.delete(key);
        void pool.close();
      }
    }
    for (const [key, session] of this.http2) {
      if (!keep.has(key)) {
        this.http2.delete(key);
        session.close();
      }
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.http1.values()].map((p) => p.close()));
    for (const session of this.http2.values()) session.close();
    this.http1.clear();
    this.http2.clear();
  }
}

function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}
