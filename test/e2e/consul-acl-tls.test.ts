import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { createCa, issueServing } from '../../operator/certs/pki.js';
import { freePorts, requireBinary, startProcess, waitFor, type ManagedProcess } from '../env/index.js';
import { startSidecar, type SidecarProcess } from './sidecar-process.js';

/**
 * Consul as clusters run it today: a server (data dir, not dev mode) with ACLs on and
 * default deny, serving HTTPS only, and no client agent for the sidecar to lean on. The
 * sidecar gets its address, a token file and the CA, registers with a TTL check it keeps
 * from the app's own health, and discovers an upstream, all with the token given.
 */
const TOKEN = 'b1a8a8e4-7c1d-4c55-9d6f-3e4a1c2b9d01';

let dir: string;
let consul: ManagedProcess;
let address: string;
let dispatcher: Agent;
let app: Server;
let appPort: number;
let sidecar: SidecarProcess | undefined;

async function consulGet(path: string, token?: string): Promise<{ status: number; body: unknown }> {
  const response = await request(`${address}${path}`, {
    dispatcher,
    headers: token ? { 'x-consul-token': token } : {},
  });
  const text = await response.body.text();
  return { status: response.statusCode, body: text ? (JSON.parse(text) as unknown) : undefined };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'aimesh-consul-acl-'));
  const ca = await createCa(Date.now());
  const serving = await issueServing(ca, ['127.0.0.1', 'server.dc1.consul', 'localhost'], Date.now());
  writeFileSync(join(dir, 'ca.pem'), ca.cert);
  writeFileSync(join(dir, 'server.pem'), serving.cert);
  writeFileSync(join(dir, 'server-key.pem'), serving.key);
  writeFileSync(join(dir, 'token'), `${TOKEN}\n`);
  const [https, serfLan, serfWan, server] = (await freePorts(4)) as [number, number, number, number];
  writeFileSync(
    join(dir, 'server.hcl'),
    `datacenter = "dc1"
data_dir = "${join(dir, 'data')}"
server = true
bootstrap_expect = 1
bind_addr = "127.0.0.1"
client_addr = "127.0.0.1"
log_level = "warn"
ports { http = -1, https = ${https}, grpc = -1, grpc_tls = -1, dns = -1, serf_lan = ${serfLan}, serf_wan = ${serfWan}, server = ${server} }
tls { defaults { ca_file = "${join(dir, 'ca.pem')}", cert_file = "${join(dir, 'server.pem')}", key_file = "${join(dir, 'server-key.pem')}", verify_incoming = false } }
acl { enabled = true, default_policy = "deny", enable_token_persistence = false, tokens { initial_management = "${TOKEN}", agent = "${TOKEN}" } }
`,
  );
  consul = startProcess(
    'consul-acl-tls',
    requireBinary('consul'),
    ['agent', `-config-file=${join(dir, 'server.hcl')}`],
    join(dir, 'logs'),
  );
  address = `https://127.0.0.1:${https}`;
  dispatcher = new Agent({ connect: { ca: ca.cert } });
  await waitFor(
    'Consul server leader over TLS',
    async () => {
      const leader = await consulGet('/v1/status/leader', TOKEN);
      return leader.status === 200 && String(leader.body).length > 4;
    },
    60_000,
  );
  app = createServer((req, res) => res.writeHead(req.url === '/healthz' ? 200 : 404).end('ok'));
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  appPort = (app.address() as { port: number }).port;
}, 120_000);

afterAll(async () => {
  await sidecar?.stop();
  await new Promise((resolve) => app?.close(resolve));
  await dispatcher?.close();
  await consul?.stop();
  if (!process.env.AIMESH_KEEP_TESTENV) rmSync(dir, { recursive: true, force: true });
});

describe('the sidecar with a Consul server: ACL default deny, TLS, no client agent', () => {
  it('refuses anonymous reads, so the token is what lets the sidecar in', async () => {
    const anonymous = await consulGet('/v1/catalog/services');
    expect(anonymous.status === 403 || JSON.stringify(anonymous.body) === '{}').toBe(true);
  });

  it('registers with a TTL check kept from the app, and discovers with the token from its file', async () => {
    sidecar = await startSidecar(
      'acl-app',
      {
        service: {
          name: 'acl-app',
          port: appPort,
          healthCheck: { path: '/healthz', interval: '1s', timeout: '1s' },
        },
        discovery: {
          mode: 'consul',
          consul: {
            address,
            datacenter: 'dc1',
            tokenFile: join(dir, 'token'),
            caFile: join(dir, 'ca.pem'),
            check: 'ttl',
          },
        },
        upstreams: [{ name: 'acl-app' }],
      },
      address,
    );
    await waitFor('acl-app registered and passing', async () => {
      const health = await consulGet('/v1/health/service/acl-app?passing=true', TOKEN);
      return Array.isArray(health.body) && health.body.length === 1;
    });
    const [entry] = (await consulGet('/v1/health/service/acl-app', TOKEN)).body as {
      Service: { Address: string; Port: number };
      Checks: { Type: string; Status: string }[];
    }[];
    expect(entry?.Service).toMatchObject({ Address: '127.0.0.1', Port: appPort });
    // Consul never calls the app: the sidecar reports its health on a TTL check.
    expect(entry?.Checks.find((c) => c.Type === 'ttl')?.Status).toBe('passing');

    // Discovery with the same token: the sidecar routes to the instance it found.
    await waitFor('the sidecar routes through what it discovered', async () => {
      const answer = await fetch(`${sidecar?.outbound}/v1/invoke/acl-app/healthz`).catch(() => undefined);
      return answer?.status === 200;
    });
  });
});
