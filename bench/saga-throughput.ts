/**
 * `npm run bench:saga`: the saga stores, before and after, in one run on one machine.
 *
 * 1. Engine and store alone (in this process, steps answered at once): executions per
 *    second of the four-step health-data saga with the old stores (bench/baselines/) and
 *    the current ones, file and Consul.
 * 2. The orchestrator sidecar as its own process, real step services over HTTP through its
 *    outbound proxy: executions per second, and the time to finish 200 in-flight
 *    executions after kill -9 (a restart for the file store, a running peer for Consul).
 * 3. The proxy's p99 at a fixed rate with and without saga executions running in the same
 *    sidecar.
 * 4. Opening a file store holding 10k and 100k finished executions: time and memory.
 *
 * Consul is a real one-node server with a data folder (bench/consul-server.ts), not a dev agent.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, readdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { validateResource, type Saga, type SidecarConfigInput } from '../api/index.js';
import { createLogger } from '../lib/log/index.js';
import { ConsulClient, ConsulRegistration } from '../sidecar/discovery/index.js';
import { ConsulSagaStore, FileSagaStore, type Execution } from '../sidecar/saga/index.js';
import { startSidecar, type SidecarProcess } from '../test/e2e/sidecar-process.js';
import { registerTestService, startStepService, type StepService } from '../test/e2e/step-services.js';
import { REPO_DIR } from '../test/env/components.js';
import { freePort, waitFor } from '../test/env/index.js';
import { BaselineConsulSagaStore } from './baselines/consul-kv-store.js';
import { BaselineFileSagaStore } from './baselines/file-per-execution-store.js';
import { startConsulServer } from './consul-server.js';
import { engineThroughput } from './saga-engine-load.js';
import { machineBusy, table, writeSection } from './report.js';

const EXECUTIONS = Number(process.env.AIMESH_BENCH_EXECUTIONS ?? 2000);
/** Parts to run (engine, sidecar, proxy, open), to look at one alone; all by default. */
const PARTS = new Set((process.env.AIMESH_BENCH_PARTS ?? 'engine,sidecar,proxy,open').split(','));
const IN_FLIGHT = 200;
const SESSION_TTL = '5s';
const PROXY_RATE = 500;
const SAGA_RATE = 200;
const LOAD_SECONDS = 10;
const parsed = validateResource(
  parse(readFileSync(join(REPO_DIR, 'examples', 'suoke-life', 'health-data-saga.yaml'), 'utf8')),
);
if (!parsed.ok) throw new Error('the health-data example does not validate');
const spec = {
  ...(parsed.resource as Saga).spec,
  concurrencyLimit: 100000,
  retention: { finished: '24h', maxFinished: 1000000 },
};
const SERVICES = ['user-service', 'health-data-service', 'blockchain-service', 'xiaoai-service'];
const quiet = createLogger('bench', { destination: { write: () => undefined } });

const server = await startConsulServer();
const consul = new ConsulClient(server.address);
const services: StepService[] = [];
const sidecars: SidecarProcess[] = [];
const dir = mkdtempSync(join(tmpdir(), 'aimesh-bench-saga-'));
const notes: string[] = [];

async function orchestrator(
  name: string,
  store: SidecarConfigInput['sagaStore'],
  extraUpstreams: string[] = [],
): Promise<SidecarProcess> {
  const sidecar = await startSidecar(
    name,
    {
      service: { name: 'health-orchestrator', port: 1 },
      discovery: { mode: 'consul', consul: { register: false } },
      upstreams: [...SERVICES, ...extraUpstreams].map((s) => ({ name: s })),
      sagas: [{ name: 'health-data', spec }],
      sagaStore: store,
    },
    server.address,
    { built: true },
  );
  sidecars.push(sidecar);
  await waitFor(
    `${name} sees every upstream`,
    async () => {
      const dump = (await (await fetch(`${sidecar.admin}/admin/endpoints`)).json()) as {
        endpoints: unknown[];
      }[];
      return dump.every((u) => u.endpoints.length === 1);
    },
    30_000,
  );
  return sidecar;
}

/**
 * fetch, tried again when the connection dropped: on a loaded machine a keep-alive socket
 * the server is closing can be picked for a request. Safe here: the requests are reads, or
 * starts with an idempotency key (a repeat returns the same execution).
 */
async function fetchAgain(url: string, init?: RequestInit): Promise<Response> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fetch(url, init);
    } catch (error) {
      const code = ((error as Error).cause as { code?: string } | undefined)?.code;
      if (attempt >= 5 || !['UND_ERR_SOCKET', 'ECONNRESET'].includes(code ?? '')) throw error;
      connectionRetries++;
    }
  }
}
let connectionRetries = 0;

async function startOne(sidecar: SidecarProcess, key: string, i: number): Promise<string> {
  const response = await fetchAgain(`${sidecar.control}/v1/sagas/health-data/executions`, {
    method: 'POST',
    headers: sidecar.controlAuth,
    body: JSON.stringify({ input: { userId: `u-${i}`, type: 'bp', measurements: [] }, idempotencyKey: key }),
  });
  if (response.status !== 201 && response.status !== 200)
    throw new Error(`start ${key}: ${response.status} ${await response.text()}`);
  return ((await response.json()) as Execution).id;
}

async function startMany(sidecar: SidecarProcess, count: number, prefix: string): Promise<string[]> {
  const ids: string[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: 100 }, async () => {
      while (next < count) {
        const i = next++;
        ids.push(await startOne(sidecar, `${prefix}-${i}`, i));
      }
    }),
  );
  return ids;
}

/** Long-polls the execution until it is terminal; its final state. */
async function finished(sidecar: SidecarProcess, id: string): Promise<string> {
  const deadline = Date.now() + 600_000;
  for (;;) {
    const execution = (await (
      await fetchAgain(`${sidecar.control}/v1/executions/${id}?wait=30s`, { headers: sidecar.controlAuth })
    ).json()) as Execution;
    if (['completed', 'compensated', 'compensation-failed'].includes(execution.state)) return execution.state;
    if (Date.now() > deadline) throw new Error(`execution ${id} still ${execution.state}`);
  }
}

/** Final states, 100 long-polls at a time (thousands of connections at once overflow the accept queue). */
async function finishedAll(sidecar: SidecarProcess, ids: string[]): Promise<string[]> {
  const states: string[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: 100 }, async () => {
      while (next < ids.length) states.push(await finished(sidecar, ids[next++] as string));
    }),
  );
  return states;
}

/** Runs `count` executions, `inFlight` at a time, each started then waited for; executions/s. */
async function closedLoop(
  sidecar: SidecarProcess,
  count: number,
  prefix: string,
  inFlight = 200,
): Promise<number> {
  let next = 0;
  let notCompleted = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < count) {
        const i = next++;
        if ((await finished(sidecar, await startOne(sidecar, `${prefix}-${i}`, i))) !== 'completed')
          notCompleted++;
      }
    }),
  );
  if (notCompleted > 0) throw new Error(`${prefix}: ${notCompleted} executions did not complete`);
  return count / ((performance.now() - started) / 1000);
}

function duplicatedEffects(): number {
  return services.flatMap((s) => [...s.effects.values()].filter((n) => n !== 1)).length;
}

/** Part 1: the engine with each store, in this process. */
async function engineRows(): Promise<(string | number)[][]> {
  const rows: (string | number)[][] = [];
  const measure = async (
    label: string,
    open: () => { store: Parameters<typeof engineThroughput>[0]; extra?: () => string },
    count: number,
  ) => {
    const { store, extra } = open();
    const result = await engineThroughput(store, spec, count, 256, `${label}-${Date.now()}`);
    rows.push([label, count, result.perSecond.toFixed(0), result.notCompleted, extra?.() ?? '-']);
    console.log(rows.at(-1)?.join(' | '));
    await store.close();
  };
  await measure(
    'file, before: one file per execution, fsync on the event loop',
    () => ({ store: new BaselineFileSagaStore(join(dir, 'engine-baseline')) }),
    Math.min(EXECUTIONS, 500),
  );
  await measure(
    'file, after: append-only log, group commit, async fdatasync',
    () => {
      const store = new FileSagaStore(join(dir, 'engine-log'), { log: quiet });
      return {
        store,
        extra: () => `${((EXECUTIONS * 10 * 5) / store.stats.syncs).toFixed(0)} changes per fdatasync`,
      };
    },
    EXECUTIONS * 10,
  );
  await measure(
    'Consul server, before: a PUT and a GET per change',
    () => ({
      store: new BaselineConsulSagaStore(consul, {
        prefix: `aimesh/bench-engine-baseline`,
        owner: 'bench',
        sessionTtl: '10s',
      }),
    }),
    Math.min(EXECUTIONS, 1000),
  );
  await measure(
    'Consul server, after: transactions of ≤ 64 CAS ops',
    () => ({
      store: new ConsulSagaStore(consul, { prefix: 'aimesh/bench-engine', owner: 'bench', log: quiet }),
    }),
    EXECUTIONS * 2,
  );
  return rows;
}

/** Part 2: the orchestrator sidecar, kill -9 and takeover. */
async function sidecarRows(): Promise<(string | number)[][]> {
  const rows: (string | number)[][] = [];
  for (const kind of ['file', 'consul'] as const) {
    const store =
      kind === 'file'
        ? { kind, path: join(dir, 'sidecar-file') }
        : { kind, prefix: `aimesh/bench-sidecar`, sessionTtl: SESSION_TTL };
    const first = await orchestrator(`bench-${kind}`, store);
    await closedLoop(first, 200, `${kind}-warm-up`);
    const perSecond = await closedLoop(first, EXECUTIONS, `${kind}-run`);

    // Crash: executions in flight, orchestrator killed, then finished by a restart or a peer.
    for (const service of services) service.behaviour.delayMs = 100;
    const peer = kind === 'consul' ? await orchestrator(`bench-${kind}-peer`, store) : undefined;
    const crashed = await startMany(first, IN_FLIGHT, `${kind}-crash`);
    await new Promise((r) => setTimeout(r, 300));
    first.process.child.kill('SIGKILL');
    await first.process.exited;
    const killedAt = performance.now();
    const survivor = peer ?? (await orchestrator(`bench-${kind}-restarted`, store));
    const states = await finishedAll(survivor, crashed);
    const recoverySeconds = (performance.now() - killedAt) / 1000;
    const lost = states.filter((state) => state !== 'completed').length;
    for (const service of services) service.behaviour.delayMs = 0;
    rows.push([
      kind === 'file'
        ? 'file: append-only log, group commit'
        : `Consul server: txn batches, session TTL ${SESSION_TTL}, lock-delay 0s`,
      perSecond.toFixed(0),
      `${recoverySeconds.toFixed(1)} s`,
      kind === 'file' ? 'restart of the orchestrator' : 'a running peer',
      lost,
      duplicatedEffects(),
    ]);
    console.log(rows.at(-1)?.join(' | '));
    for (const sidecar of sidecars.splice(0)) await sidecar.stop();
  }
  return rows;
}

/** Part 3: proxy p99 with and without saga load in the same sidecar. */
async function proxyRows(): Promise<(string | number)[][]> {
  const port = await freePort();
  const sidecarDir = join(dir, 'proxy-file');
  let registration: ConsulRegistration | undefined;
  const generator = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(REPO_DIR, 'bench', 'proxy-load.ts'),
      String(port),
      '/v1/invoke/echo/',
      String(PROXY_RATE),
      String(LOAD_SECONDS),
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const lines = createInterface({ input: generator.stdout })[Symbol.asyncIterator]();
  const nextLine = async () => String((await lines.next()).value);
  try {
    if ((await nextLine()) !== 'listening') throw new Error('load generator did not start');
    registration = await registerTestService(consul, 'echo', port);
    const sidecar = await orchestrator('bench-proxy', { kind: 'file', path: sidecarDir }, ['echo']);
    const run = async () => {
      generator.stdin.write(`run ${sidecar.outbound}\n`);
      return JSON.parse(await nextLine()) as { p50: number; p99: number; errors: number };
    };
    await run(); // warm-up: JIT, connection pools
    const quietBusy = machineBusy();
    const quietRun = await run();
    const quietCpu = quietBusy();
    // Sagas at a fixed rate in the same sidecar while the proxy is measured again.
    let stop = false;
    let sagaStarted = 0;
    let sagaErrors = 0;
    const loadIds: string[] = [];
    const sagaLoad = (async () => {
      const from = performance.now();
      const pending: Promise<unknown>[] = [];
      while (!stop) {
        const due = Math.floor(((performance.now() - from) / 1000) * SAGA_RATE);
        while (sagaStarted < due) {
          const i = sagaStarted++;
          pending.push(
            startOne(sidecar, `proxy-load-${i}`, i).then(
              (id) => loadIds.push(id),
              (error: unknown) => {
                sagaErrors++;
                console.error(String(error));
              },
            ),
          );
        }
        await new Promise((r) => setTimeout(r, 5));
      }
      await Promise.all(pending);
    })();
    await new Promise((r) => setTimeout(r, 1000));
    const loadedBusy = machineBusy();
    const loadedRun = await run();
    const loadedCpu = loadedBusy();
    stop = true;
    await sagaLoad;
    const loadStates = await finishedAll(sidecar, loadIds);
    const loadNotCompleted = loadStates.filter((state) => state !== 'completed').length;
    console.log('proxy alone', quietRun, 'with sagas', loadedRun);
    return [
      ['none', quietRun.p50.toFixed(2), quietRun.p99.toFixed(2), quietRun.errors, '-', percent(quietCpu)],
      [
        `${SAGA_RATE} executions/s started (${sagaStarted} in all, ${sagaErrors} refused, ${loadNotCompleted} not completed)`,
        loadedRun.p50.toFixed(2),
        loadedRun.p99.toFixed(2),
        loadedRun.errors,
        `${(loadedRun.p99 - quietRun.p99).toFixed(2)} ms`,
        percent(loadedCpu),
      ],
    ];
  } finally {
    generator.kill('SIGTERM');
    await registration?.deregister();
    for (const s of sidecars.splice(0)) await s.stop();
  }
}

function percent(share: number): string {
  return `${Math.round(share * 100)}%`;
}

/** Part 4: a store holding many finished executions, opened in a fresh process. */
async function openRows(): Promise<(string | number)[][]> {
  const rows: (string | number)[][] = [];
  for (const count of [0, 10_000, 100_000]) {
    const folder = join(dir, `open-${count}`);
    const store = new FileSagaStore(folder, { log: quiet });
    let next = 0;
    await Promise.all(
      Array.from({ length: 500 }, async () => {
        while (next < count) {
          const i = next++;
          await store.create(finishedExecution(i));
        }
      }),
    );
    await store.close();
    const logBytes = readdirSync(join(folder, 'log')).reduce(
      (sum, name) => sum + statSync(join(folder, 'log', name)).size,
      0,
    );
    const child = spawnSync(
      process.execPath,
      ['--expose-gc', '--import', 'tsx', join(REPO_DIR, 'bench', 'saga-store-open.ts'), folder],
      { encoding: 'utf8' },
    );
    if (child.status !== 0) throw new Error(`opening the store failed: ${child.stderr}`);
    const opened = JSON.parse(child.stdout) as {
      ms: number;
      executions: number;
      heapMiB: number;
      rssMiB: number;
    };
    rows.push([
      count,
      `${(logBytes / 2 ** 20).toFixed(1)} MiB`,
      `${opened.ms.toFixed(0)} ms`,
      `${opened.heapMiB.toFixed(1)} MiB`,
      `${opened.rssMiB.toFixed(0)} MiB`,
      count ? `${((opened.heapMiB * 2 ** 20) / count).toFixed(0)} B` : '-',
    ]);
    console.log(rows.at(-1)?.join(' | '));
    rmSync(folder, { recursive: true, force: true });
  }
  return rows;
}

/** A completed health-data execution as the engine leaves it (about 1.6 KB of JSON). */
function finishedExecution(i: number): Execution {
  const now = Date.now();
  const response = (n: number) => ({
    status: 200,
    headers: { 'content-type': 'application/json' },
    body: { validationId: `v-${n}`, recordId: `r-${n}`, sha256: `sha-${n}`, anchorId: `a-${n}` },
  });
  return {
    id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
    saga: 'health-data',
    idempotencyKey: `open-${i}`,
    input: { userId: `u-${i}`, type: 'bp', measurements: [120, 80] },
    state: 'completed',
    startedAt: now,
    deadline: now + 120_000,
    updatedAt: now,
    cursor: 4,
    notBefore: now,
    pivotPassed: true,
    steps: ['validate_user', 'save_health_data', 'update_blockchain', 'trigger_ai_analysis'].map(
      (name, s) => ({
        name,
        status: 'succeeded' as const,
        attempts: 1,
        compensationAttempts: 0,
        response: response(i * 4 + s),
      }),
    ),
    version: 5,
  };
}

try {
  for (const name of SERVICES) services.push(await startStepService(name, consul));
  const engine = PARTS.has('engine') ? await engineRows() : [];
  const sidecar = PARTS.has('sidecar') ? await sidecarRows() : [];
  const proxy = PARTS.has('proxy') ? await proxyRows() : [];
  const open = PARTS.has('open') ? await openRows() : [];
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  notes.push(`Load average at the end of the run: ${load} (other builds and tests shared the machine).`);
  notes.push(`Requests sent again after a dropped keep-alive connection: ${connectionRetries}.`);
  if (PARTS.size < 4) {
    console.log('some parts were left out: BENCHMARKS.md not written');
  } else
    writeSection(
      'saga-throughput',
      'Sagas: store throughput, recovery after kill -9, proxy latency under saga load, store size',
      'npm run bench:saga',
      [
        '### Engine and store alone',
        '',
        table(['store', 'executions', 'executions/s', 'not completed', 'note'], engine),
        '',
        'The saga engine in the benchmark process with each store; each of the four steps is answered at once in process (no HTTP), so this is what the store allows. 256 executions in flight. Every state change is on disk (file) or committed by Raft (Consul) before the engine acts on it. "Before" rows are the stores as they were at commit 8def6dc (bench/baselines/).',
        '',
        '### Orchestrator sidecar, end to end',
        '',
        table(
          [
            'store',
            `executions/s (${EXECUTIONS} four-step executions)`,
            `all ${IN_FLIGHT} in-flight executions finished after kill -9`,
            'taken over by',
            'not completed',
            'duplicated effects',
          ],
          sidecar,
        ),
        '',
        `The orchestrator sidecar (the bundled CLI with the render's V8 flags, as the image runs it) driven through its HTTP control API: 200 executions in flight, each started then long-polled until finished (\`GET /v1/executions/<id>?wait=30s\`), four step services (Node HTTP servers in the benchmark process; 100 ms per call during the crash runs) reached through the sidecar's outbound proxy, all on the same 2 cores. Consul: a one-node server with a data folder (\`-server -bootstrap-expect=1\`), \`session_ttl_min = "1s"\`; session TTL ${SESSION_TTL}, lock-delay 0s, recovery every 2 s: a dead orchestrator's executions are taken within 2 × TTL + 2 s.`,
        '',
        '### Proxy latency with sagas in the same sidecar',
        '',
        table(
          [
            'saga load',
            `p50 ms @ ${PROXY_RATE}/s`,
            `p99 ms @ ${PROXY_RATE}/s`,
            'errors',
            'p99 change',
            'machine CPU busy (2 cores)',
          ],
          proxy,
        ),
        '',
        `One sidecar with the file store; ${PROXY_RATE} req/s for ${LOAD_SECONDS} s to an echo upstream through its outbound proxy, from a load generator in its own process (latency from the scheduled send time), first alone, then while ${SAGA_RATE} executions/s are started on the same sidecar. The sagas (engine, store, step calls, control APIs) run on a worker thread of the sidecar, so they do not hold up the proxy's event loop; they still share the machine's 2 cores with the proxy, the load generator, the upstream and the step services: the last column says how much of those cores was taken while each row was measured.`,
        '',
        '### Opening a file store with many finished executions',
        '',
        table(
          [
            'finished executions',
            'log on disk',
            'open (read + replay)',
            'heap',
            'process RSS',
            'heap per execution',
          ],
          open,
        ),
        '',
        'Each execution is a completed health-data execution (about 1.6 KB of JSON); opened in a fresh Node process, heap measured after a full GC. Default retention keeps 10000 finished executions per saga for 24h; these stores were filled with retention raised.',
        '',
        ...notes,
      ].join('\n'),
    );
} finally {
  for (const sidecar of sidecars) await sidecar.stop();
  for (const service of services) await service.stop();
  await consul.close();
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
}
