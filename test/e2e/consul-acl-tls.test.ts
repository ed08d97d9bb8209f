import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import type { SagaSpec, SidecarConfigInput } from '../../api/index.js';
import { createCa, issueServing } from '../../operator/certs/pki.js';
import { ConsulClient } from '../../sidecar/discovery/index.js';
import type { Execution } from '../../sidecar/saga/index.js';
import { freePorts, requireBinary, startProcess, waitFor, type ManagedProcess } from '../env/index.js';
import { startSidecar, type SidecarProcess } from './sidecar-process.js';
import { startStepService, type StepService } from './step-services.js';

/**
 * Consul as clusters run it today: a server (data dir, not dev mode) with ACLs on and
 * default deny, serving HTTPS only, and no client agent for the sidecar to lean on. The
 * sidecar gets its address, a token file and the CA, registers with a TTL check it keeps
 * from the app's own health, and discovers an upstream, all with the token given; a saga
 * orchestrator keeps its executions in Consul KV through the same server with a token of
 * exactly the policy the README (Sagas) documents, and one without write access says so.
 */
const TOKEN = 'b1a8a8e4-7c1d-4c55-9d6f-3e4a1c2b9d01';

let dir: string;
let consul: ManagedProcess;
let address: string;
let dispatcher: Agent;
let app: Server;
let appPort: number;
/** What the app's /healthz answers: 200 while true, 503 once false. */
let appHealthy = true;
let sidecar: SidecarProcess | undefined;
const orchestrators: SidecarProcess[] = [];
const stepServices: StepService[] = [];
let management: ConsulClient | undefined;

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
  app = createServer((req, res) =>
    res.writeHead(req.url === '/healthz' ? (appHealthy ? 200 : 503) : 404).end('ok'),
  );
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  appPort = (app.address() as { port: number }).port;
}, 120_000);

afterAll(async () => {
  await sidecar?.stop();
  for (const orchestrator of orchestrators) await orchestrator.stop();
  for (const service of stepServices) await service.stop();
  await management?.close();
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

    // The app turns unhealthy: the sidecar's next beat marks the check critical, and back.
    const ttlStatus = async () =>
      (
        (await consulGet('/v1/health/service/acl-app', TOKEN)).body as {
          Checks: { Type: string; Status: string }[];
        }[]
      )[0]?.Checks.find((c) => c.Type === 'ttl')?.Status;
    appHealthy = false;
    await waitFor('the TTL check turns critical', async () => (await ttlStatus()) === 'critical');
    appHealthy = true;
    await waitFor('the TTL check passes again', async () => (await ttlStatus()) === 'passing');
  });
});

/** The ACL policy the README (Sagas) gives a saga orchestrator (its store and its discovery). */
const SAGA_POLICY = `key_prefix "aimesh/sagas/" { policy = "write" }
session_prefix "" { policy = "write" }
service_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }`;
/** The same reads, but the store may only read: no KV write, no session. */
const READ_ONLY_POLICY = `key_prefix "aimesh/sagas/" { policy = "read" }
session_prefix "" { policy = "read" }
service_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }`;

const LEDGER_SAGA: SagaSpec = {
  orchestrator: 'ledger-orchestrator',
  timeout: '1m',
  concurrencyLimit: 50,
  steps: [
    {
      name: 'reserve',
      action: { service: 'acl-ledger', method: 'POST', path: '/reservations', headers: {}, timeout: '5s' },
      compensation: {
        service: 'acl-ledger',
        method: 'POST',
        path: '/reservations/{{ steps.reserve.response.body.recordId }}/release',
        headers: {},
        timeout: '5s',
      },
      retry: { maxAttempts: 3, backoff: { initial: '50ms', multiplier: 2, max: '200ms' } },
      pivot: false,
    },
    {
      name: 'notify',
      action: {
        service: 'acl-notify',
        method: 'POST',
        path: '/notifications',
        headers: {},
        body: { record: '{{ steps.reserve.response.body.recordId }}' },
        timeout: '5s',
      },
      retry: { maxAttempts: 3, backoff: { initial: '50ms', multiplier: 2, max: '200ms' } },
      pivot: false,
    },
  ],
} as SagaSpec;

/** A token of one policy, made with the management token. */
async function tokenWith(name: string, rules: string): Promise<string> {
  const put = async (path: string, body: unknown) => {
    const response = await request(`${address}${path}`, {
      method: 'PUT',
      dispatcher,
      headers: { 'x-consul-token': TOKEN, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const text = await response.body.text();
    expect(`${path} ${response.statusCode} ${text}`).toMatch(new RegExp(`^${path} 200 `));
    return JSON.parse(text) as { SecretID: string };
  };
  await put('/v1/acl/policy', { Name: name, Rules: rules });
  const file = join(dir, `${name}.token`);
  writeFileSync(file, (await put('/v1/acl/token', { Policies: [{ Name: name }] })).SecretID);
  return file;
}

async function startOrchestrator(name: string, tokenFile: string): Promise<SidecarProcess> {
  const config: Omit<SidecarConfigInput, 'listen'> = {
    service: { name: 'ledger-orchestrator', port: 1 },
    discovery: {
      mode: 'consul',
      consul: { address, datacenter: 'dc1', tokenFile, caFile: join(dir, 'ca.pem'), register: false },
    },
    upstreams: [
      { name: 'acl-ledger', timeout: '5s' },
      { name: 'acl-notify', timeout: '5s' },
    ],
    sagas: [{ name: 'ledger', spec: LEDGER_SAGA }],
    sagaStore: { kind: 'consul', sessionTtl: '10s' },
  };
  const orchestrator = await startSidecar(name, config, address);
  orchestrators.push(orchestrator);
  return orchestrator;
}

async function startLedger(orchestrator: SidecarProcess, key: string) {
  const response = await fetch(`${orchestrator.control}/v1/sagas/ledger/executions`, {
    method: 'POST',
    headers: { ...orchestrator.controlAuth, 'content-type': 'application/json' },
    body: JSON.stringify({ input: { amount: 3 }, idempotencyKey: key }),
  });
  return {
    status: response.status,
    body: (await response.json()) as Execution & { error?: string; code?: string },
  };
}

describe('a saga on the Consul store through the ACL and TLS server', () => {
  it('runs executions to completion with a token of the documented policy, and keeps them in KV', async () => {
    management = new ConsulClient(address, { token: TOKEN, caFile: join(dir, 'ca.pem'), datacenter: 'dc1' });
    for (const name of ['acl-ledger', 'acl-notify'])
      stepServices.push(await startStepService(name, management));
    const orchestrator = await startOrchestrator(
      'ledger-orchestrator',
      await tokenWith('aimesh-saga', SAGA_POLICY),
    );
    await waitFor('the orchestrator sees both step services', async () => {
      const dump = (await (await fetch(`${orchestrator.admin}/admin/endpoints`)).json()) as {
        endpoints: unknown[];
      }[];
      return dump.length === 2 && dump.every((u) => u.endpoints.length === 1);
    });

    const started = await Promise.all(
      Array.from({ length: 10 }, (_, i) => startLedger(orchestrator, `acl-run-${i}`)),
    );
    expect(started.map((s) => s.status)).toEqual(Array(10).fill(201));
    const done = await Promise.all(
      started.map(
        async (s) =>
          (await (
            await fetch(`${orchestrator.control}/v1/executions/${s.body.id}?wait=30s`, {
              headers: orchestrator.controlAuth,
            })
          ).json()) as Execution,
      ),
    );
    expect(done.map((e) => e.state)).toEqual(Array(10).fill('completed'));
    // A repeated start is answered from the store, not run again.
    const again = await startLedger(orchestrator, 'acl-run-0');
    expect(again.body.id).toBe(started[0]?.body.id);
    // The executions are where the policy lets the store write them, read with the management token.
    const stored = await management.kvList('aimesh/sagas/finished/');
    expect(stored.map((e) => (JSON.parse(e.value) as Execution).id).sort()).toEqual(
      started.map((s) => s.body.id).sort(),
    );
    const ledger = stepServices[0] as StepService;
    expect([...ledger.effects.values()]).toEqual(Array(10).fill(1));
  });

  it('says that the ACL token lacks permission when it may not write the store, and starts nothing', async () => {
    // No session write: refused when the store opens its session. Session write but KV read
    // only: refused inside the transaction, which must not pass for a conflict to retry.
    for (const [name, rules] of [
      ['aimesh-saga-read-only', READ_ONLY_POLICY],
      [
        'aimesh-saga-no-kv-write',
        READ_ONLY_POLICY.replace(
          'session_prefix "" { policy = "read" }',
          'session_prefix "" { policy = "write" }',
        ),
      ],
    ] as const) {
      const orchestrator = await startOrchestrator(name, await tokenWith(name, rules));
      const refused = await startLedger(orchestrator, `${name}-start`);
      expect(`${name}: ${refused.status} ${refused.body.code}`).toBe(`${name}: 502 dependency.failed`);
      expect(refused.body.error).toMatch(/ACL token/);
      expect(refused.body.error).toMatch(/Permission denied/);
      expect(refused.body.error).toContain('key_prefix "aimesh/sagas/" { policy = "write" }');
      // Nothing half-made: no execution the caller was not told about.
      const listed = (await (
        await fetch(`${orchestrator.control}/v1/executions`, { headers: orchestrator.controlAuth })
      ).json()) as Execution[];
      expect(listed.filter((e) => e.idempotencyKey === `${name}-start`)).toEqual([]);
    }
  });
});
