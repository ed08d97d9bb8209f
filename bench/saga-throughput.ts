/**
 * `npm run bench:saga`: executions per second of the four-step health-data saga with each
 * store, and how long it takes to finish 200 in-flight executions after the orchestrator
 * is killed (a restart for the file store, a running peer for the Consul store). Real
 * Consul agent, real step services over HTTP, sidecars as their own processes.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { validateResource, type Saga, type SidecarConfigInput } from '../api/index.js';
import { ConsulClient } from '../sidecar/discovery/index.js';
import type { Execution } from '../sidecar/saga/index.js';
import { startSidecar, type SidecarProcess } from '../test/e2e/sidecar-process.js';
import { startStepService, type StepService } from '../test/e2e/step-services.js';
import { REPO_DIR } from '../test/env/components.js';
import { startConsul, waitFor } from '../test/env/index.js';
import { table, writeSection } from './report.js';

const EXECUTIONS = Number(process.env.AIMESH_BENCH_EXECUTIONS ?? 500);
const IN_FLIGHT = 200;
const SESSION_TTL = '10s';
const parsed = validateResource(
  parse(readFileSync(join(REPO_DIR, 'examples', 'suoke-life', 'health-data-saga.yaml'), 'utf8')),
);
if (!parsed.ok) throw new Error('the health-data example does not validate');
const spec = { ...(parsed.resource as Saga).spec, concurrencyLimit: 1000 };
const SERVICES = ['user-service', 'health-data-service', 'blockchain-service', 'xiaoai-service'];

const agent = await startConsul();
const consul = new ConsulClient(agent.address);
const services: StepService[] = [];
const sidecars: SidecarProcess[] = [];
const dir = mkdtempSync(join(tmpdir(), 'aimesh-bench-saga-'));

async function orchestrator(name: string, store: SidecarConfigInput['sagaStore']): Promise<SidecarProcess> {
  const sidecar = await startSidecar(
    name,
    {
      service: { name: 'health-orchestrator', port: 1 },
      discovery: { mode: 'consul', consul: { register: false } },
      upstreams: SERVICES.map((s) => ({ name: s })),
      sagas: [{ name: 'health-data', spec }],
      sagaStore: store,
    },
    agent.address,
  );
  sidecars.push(sidecar);
  await waitFor(`${name} ready`, async () => (await fetch(`${sidecar.admin}/readyz`)).ok, 30_000);
  return sidecar;
}

async function startMany(sidecar: SidecarProcess, count: number, prefix: string): Promise<string[]> {
  const ids: string[] = [];
  const batch = 50;
  for (let i = 0; i < count; i += batch) {
    const started = await Promise.all(
      Array.from({ length: Math.min(batch, count - i) }, async (_, j) => {
        const response = await fetch(`${sidecar.control}/v1/sagas/health-data/executions`, {
          method: 'POST',
          body: JSON.stringify({
            input: { userId: `u-${i + j}`, type: 'bp', measurements: [] },
            idempotencyKey: `${prefix}-${i + j}`,
          }),
        });
        return ((await response.json()) as Execution).id;
      }),
    );
    ids.push(...started);
  }
  return ids;
}

async function allDone(sidecar: SidecarProcess, prefix: string, count: number): Promise<void> {
  await waitFor(
    `${count} ${prefix} executions finished`,
    async () => {
      const all = (await (
        await fetch(`${sidecar.control}/v1/executions?saga=health-data`)
      ).json()) as Execution[];
      return (
        all.filter((e) => e.idempotencyKey.startsWith(`${prefix}-`) && e.state === 'completed').length ===
        count
      );
    },
    600_000,
  );
}

try {
  for (const name of SERVICES) services.push(await startStepService(name, consul));
  const rows: (string | number)[][] = [];
  for (const kind of ['file', 'consul'] as const) {
    const store =
      kind === 'file'
        ? { kind, path: join(dir, 'file') }
        : { kind, prefix: `aimesh/bench-${Date.now()}`, sessionTtl: SESSION_TTL };
    const first = await orchestrator(`bench-${kind}`, store);
    const started = performance.now();
    await startMany(first, EXECUTIONS, `${kind}-run`);
    await allDone(first, `${kind}-run`, EXECUTIONS);
    const perSecond = EXECUTIONS / ((performance.now() - started) / 1000);

    // Crash: executions in flight, orchestrator killed, then finished by a restart or a peer.
    for (const service of services) service.behaviour.delayMs = 100;
    const peer = kind === 'consul' ? await orchestrator(`bench-${kind}-peer`, store) : undefined;
    await startMany(first, IN_FLIGHT, `${kind}-crash`);
    await new Promise((r) => setTimeout(r, 300));
    first.process.child.kill('SIGKILL');
    await first.process.exited;
    const killedAt = performance.now();
    const survivor = peer ?? (await orchestrator(`bench-${kind}-restarted`, store));
    await allDone(survivor, `${kind}-crash`, IN_FLIGHT);
    const recoverySeconds = (performance.now() - killedAt) / 1000;
    for (const service of services) service.behaviour.delayMs = 0;
    const duplicates = services.flatMap((s) => [...s.effects.values()].filter((n) => n !== 1)).length;
    rows.push([
      kind === 'file' ? 'file (fsync per change)' : `Consul KV (CAS, session TTL ${SESSION_TTL})`,
      perSecond.toFixed(0),
      `${recoverySeconds.toFixed(1)} s`,
      kind === 'file' ? 'restart of the orchestrator' : 'a running peer',
      duplicates,
    ]);
    console.log(rows[rows.length - 1]?.join(' | '));
    for (const sidecar of sidecars.splice(0)) await sidecar.stop();
  }
  writeSection(
    'saga-throughput',
    'Sagas: executions per second and recovery after kill -9',
    'npm run bench:saga',
    `${table(['store', `executions/s (${EXECUTIONS} four-step executions)`, `all ${IN_FLIGHT} in-flight executions finished after kill -9`, 'taken over by', 'duplicated effects'], rows)}\n\nOne Consul dev agent, four step services (Node HTTP servers answering at once; 100 ms per call during the crash runs) and the orchestrator sidecar (run from source with tsx) on the same 2 cores. Each execution makes four step calls through the sidecar's outbound proxy and saves its state before each call and after each outcome. The Consul agent runs in dev mode (in memory, no disk writes), so its figure is an upper bound for a real server; it includes waiting out the dead orchestrator's session, which Consul may keep for up to twice its TTL.\n`,
  );
} finally {
  for (const sidecar of sidecars) await sidecar.stop();
  for (const service of services) await service.stop();
  await consul.close();
  await agent.stop();
  rmSync(dir, { recursive: true, force: true });
}
