/**
 * The one probe server: /healthz (the process runs), /readyz (it can do its job, with the
 * reason when not), /metrics (Prometheus), plus any JSON routes a component adds (the
 * sidecar's admin dumps). The operator and the sidecar both serve it.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

export interface Readiness {
  ready: boolean;
  reason: string;
}

/**
 * What /metrics serves: a prom-client Registry, or anything that renders one exposition the
 * same way (the sidecar aggregates its saga thread's registry with its own).
 */
export interface MetricsSource {
  readonly contentType: string;
  metrics: () => Promise<string>;
}

export interface ProbeServerOptions {
  host: string;
  port: number;
  registry: MetricsSource;
  ready: () => Readiness;
  /** Extra read-only JSON routes by exact path, e.g. `/admin/endpoints`. */
  routes?: Record<string, () => unknown>;
  /**
   * Serve `routes` only to callers on this machine (loopback): the probes must be reachable
   * from the kubelet on the pod network, the admin dumps only from inside the pod.
   */
  routesFromLoopbackOnly?: boolean;
}

export interface ProbeServer {
  server: Server;
  port: number;
  close: () => Promise<void>;
}

/** Resolves once listening; `port: 0` picks a free port, reported back. */
export async function startProbeServer(options: ProbeServerOptions): Promise<ProbeServer> {
  const server = createServer((req, res) => serve(options, req, res));
  // Probes and scrapes are short: a slow or idle client must not hold a socket.
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const address = server.address();
  return {
    server,
    port: typeof address === 'object' && address ? address.port : options.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function serve(options: ProbeServerOptions, req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '/').split('?')[0] ?? '/';
  if (req.method !== 'GET' && req.method !== 'HEAD')
    return json(res, 405, { error: 'only GET is served here' });
  if (path === '/healthz') return json(res, 200, { status: 'ok' });
  if (path === '/readyz') {
    const { ready, reason } = options.ready();
    return json(res, ready ? 200 : 503, { ready, reason });
  }
  if (path === '/metrics') {
    options.registry
      .metrics()
      .then((text) => res.writeHead(200, { 'content-type': options.registry.contentType }).end(text))
      .catch((error: unknown) => json(res, 500, { error: `collecting metrics failed: ${String(error)}` }));
    return;
  }
  const route = options.routes?.[path];
  if (route && options.routesFromLoopbackOnly && !isLoopback(req.socket.remoteAddress))
    return json(res, 403, {
      error: `${path} is served only from inside the pod (127.0.0.1); use kubectl exec or kubectl port-forward`,
    });
  if (route) return json(res, 200, route());
  const known = ['/healthz', '/readyz', '/metrics', ...Object.keys(options.routes ?? {})];
  json(res, 404, { error: `no such path ${path}; try ${known.join(', ')}` });
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(`${JSON.stringify(body, null, 2)}\n`);
}

/** Whether a connection comes from this machine (so, for a pod, from inside the pod). */
export function isLoopback(address: string | undefined): boolean {
  return (
    address === '::1' || address?.startsWith('127.') === true || address?.startsWith('::ffff:127.') === true
  );
}
