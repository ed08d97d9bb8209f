import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

export interface ProbeServerOptions {
  host: string;
  port: number;
  registry: Registry;
  /** Ready when it can do its job: caches synced, or standing by for the lease. */
  ready: () => boolean;
}

/** /metrics, /healthz and /readyz. Resolves with the listening server and its port. */
export async function startProbeServer(
  options: ProbeServerOptions,
): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') return void res.writeHead(200).end('ok');
    if (path === '/readyz')
      return void res.writeHead(options.ready() ? 200 : 503).end(options.ready() ? 'ok' : 'not ready');
    if (path === '/metrics') {
      options.registry
        .metrics()
        .then((body) => res.writeHead(200, { 'content-type': options.registry.contentType }).end(body))
        .catch((error: unknown) => res.writeHead(500).end(String(error)));
      return;
    }
    res.writeHead(404).end('not found');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, resolve);
  });
  const address = server.address();
  return { server, port: typeof address === 'object' && address ? address.port : options.port };
}
