/**
 * The admin port: /healthz (the process runs), /readyz (config loaded, discovery answered,
 * not draining), /metrics, and /admin/endpoints, a dump of every upstream's endpoints with
 * their health, load and breaker state.
 */
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

export interface AdminOptions {
  host: string;
  port: number;
  registry: Registry;
  ready: () => { ready: boolean; reason: string };
  endpoints: () => unknown;
  config: () => unknown;
}

export async function startAdminServer(options: AdminOptions): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(`${JSON.stringify(body, null, 2)}\n`);
    };
    if (path === '/healthz') return json(200, { status: 'ok' });
    if (path === '/readyz') {
      const { ready, reason } = options.ready();
      return json(ready ? 200 : 503, { ready, reason });
    }
    if (path === '/metrics') {
      options.registry
        .metrics()
        .then((text) => {
          res.writeHead(200, { 'content-type': options.registry.contentType });
          res.end(text);
        })
        .catch((error: unknown) => json(500, { error: String(error) }));
      return;
    }
    if (path === '/admin/endpoints') return json(200, options.endpoints());
    if (path === '/admin/config') return json(200, options.config());
    json(404, {
      error: `no such admin path ${path}; try /healthz, /readyz, /metrics, /admin/endpoints, /admin/config`,
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const address = server.address();
  return { server, port: typeof address === 'object' && address ? address.port : options.port };
}
