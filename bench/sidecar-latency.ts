/**
 * `npm run bench:sidecar`: the latency the aimesh sidecar adds and its throughput, next to
 * a direct call, HAProxy (the Debian package, when installed) and a plain Node proxy, in
 * one run on one machine; and the sidecar's memory idle and under load.
 *
 * Fixed rate: requests are scheduled at a constant rate and latency counts from the
 * scheduled time, so queueing shows (no coordinated omission). Throughput: a closed loop
 * with a fixed number of connections for a fixed time. CPU per request comes from each
 * proxy's own CPU counters (/proc/<pid>/stat) over a fixed-rate run, and the sidecar runs
 * with the V8 flags the render gives its container. A last pass profiles the sidecar's CPU
 * (--cpu-prof) and sums where the time goes.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'undici';
import { DEFAULT_SIDECAR_RESOURCES, sidecarNodeOptions } from '../render/index.js';
import { registerLocally } from '../sidecar/discovery/index.js';
import { BUILT_ENTRY } from '../image/bundle.js';
import { REPO_DIR } from '../test/env/components.js';
import { freePorts, waitFor } from '../test/env/index.js';
import { installDebianPackages } from '../test/env/node.js';
import { summarizeCpuProfile } from './cpu-profile.js';
import { cpuMs, table, writeSection } from './report.js';

const RATE = Number(process.env.AIMESH_BENCH_RATE ?? 500);
/** The rate at which memory and CPU per request are measured. */
const LOAD_RATE = Number(process.env.AIMESH_BENCH_LOAD_RATE ?? 1000);
/** To compare other V8 flags with the render's: AIMESH_BENCH_SIDECAR_NODE_OPTIONS="...". */
const SIDECAR_FLAGS = (
  process.env.AIMESH_BENCH_SIDECAR_NODE_OPTIONS ?? sidecarNodeOptions(DEFAULT_SIDECAR_RESOURCES.limits.memory)
)
  .split(' ')
  .filter(Boolean);
const SECONDS = Number(process.env.AIMESH_BENCH_SECONDS ?? 10);
const UPSTREAM_COUNTS = (process.env.AIMESH_BENCH_UPSTREAMS ?? '1,10,64').split(',').map(Number);
const CONNECTIONS = Number(process.env.AIMESH_BENCH_CONNECTIONS ?? 32);
const BODY = JSON.stringify({ ok: true, service: 'echo', padding: 'x'.repeat(200) });

interface Target {
  name: string;
  origin: string;
  path: string;
  /** Requests go round these paths in turn instead of `path` (one per upstream). */
  paths?: string[];
  pid?: number;
}

const dir = mkdtempSync(join(tmpdir(), 'aimesh-bench-'));
const children: ChildProcess[] = [];

function start(command: string, args: string[], name: string): ChildProcess {
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  child.once('exit', (code) => {
    if (code && code !== 0 && !stopping) console.error(`${name} exited ${code}: ${stderr}`);
  });
  children.push(child);
  return child;
}
let stopping = false;

async function ready(url: string): Promise<void> {
  await waitFor(url, async () => (await fetch(url)).ok, 30_000);
}

function rssMiB(pid: number, field: 'VmRSS' | 'VmHWM' | 'RssAnon' | 'RssFile'): number {
  const match = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Math.round(Number(match?.[1] ?? 0) / 1024);
}

/** Forgets the process's peak RSS, so VmHWM afterwards is the peak of what follows. */
function resetPeak(pid: number): void {
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

async function fixedRate(
  target: Target,
  rate: number,
): Promise<{ p50: number; p99: number; errors: number; sent: number }> {
  const pool = new Pool(target.origin, { connections: 64 });
  const latencies: number[] = [];
  let errors = 0;
  const total = rate * SECONDS;
  const start = performance.now();
  const pending: Promise<void>[] = [];
  for (let i = 0; i < total; i++) {
    const scheduled = start + (i * 1000) / rate;
    const wait = scheduled - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    // From the scheduled time when running late (queueing counts), else from the send.
    const origin = Math.min(scheduled, performance.now());
    pending.push(
      pool
        .request({
          method: 'GET',
          path: target.paths ? (target.paths[i % target.paths.length] as string) : target.path,
        })
        .then(async (response) => {
          await response.body.text();
          if (response.statusCode !== 200) errors++;
          latencies.push(performance.now() - origin);
        })
        .catch(() => {
          errors++;
        }),
    );
  }
  await Promise.all(pending);
  await pool.close();
  latencies.sort((a, b) => a - b);
  return { p50: percentile(latencies, 50), p99: percentile(latencies, 99), errors, sent: total };
}

async function throughput(target: Target): Promise<number> {
  const pool = new Pool(target.origin, { connections: CONNECTIONS, pipelining: 1 });
  let done = 0;
  const until = performance.now() + SECONDS * 1000;
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (performance.now() < until) {
        const response = await pool.request({ method: 'GET', path: target.path });
        await response.body.text();
        if (response.statusCode === 200) done++;
      }
    }),
  );
  await pool.close();
  return Math.round(done / SECONDS);
}

const upstream = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(BODY);
});
await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
const upstreamPort = (upstream.address() as AddressInfo).port;

/**
 * The bundled CLI, as the container image runs it (npm run build first). The CPU profile
 * runs tsc's build of the same sources instead: in the bundle every frame is in one minified
 * file, in dist/ each names its package and module.
 */
function startSidecar(
  config: string,
  registry: string,
  extraFlags: string[] = [],
  entry = BUILT_ENTRY,
): ChildProcess {
  return start(
    process.execPath,
    [
      ...SIDECAR_FLAGS,
      ...extraFlags,
      entry,
      'sidecar',
      `--config=${config}`,
      '--admin-address=127.0.0.1',
      `--local-registry=${registry}`,
    ],
    'sidecar',
  );
}

/**
 * A saga orchestrator's sidecar idles higher: the saga engine runs on a thread of its own,
 * with its own V8 heap and its own copy of the modules. One Saga, the file store.
 */
async function orchestratorIdle(registry: string): Promise<{ rss: number; anon: number; file: number }> {
  const [outbound, admin, control, controlGrpc] = (await freePorts(4)) as [number, number, number, number];
  const config = join(dir, 'orchestrator.json');
  writeFileSync(
    config,
    JSON.stringify({
      service: { name: 'orchestrator', port: 1 },
      listen: { outbound, admin, control, controlGrpc },
      discovery: { mode: 'local' },
      upstreams: [{ name: 'echo', timeout: '5s' }],
      sagas: [
        {
          name: 'idle',
          spec: {
            orchestrator: 'orchestrator',
            steps: [{ name: 'one', action: { service: 'echo', method: 'POST', path: '/' } }],
          },
        },
      ],
      sagaStore: { kind: 'file', path: join(dir, 'saga-store') },
    }),
  );
  const sidecar = startSidecar(config, registry);
  await ready(`http://127.0.0.1:${admin}/readyz`);
  // As the plain sidecar's figure: after start-up's garbage has been collected.
  await new Promise((resolve) => setTimeout(resolve, 3000));
  const pid = sidecar.pid as number;
  const figures = { rss: rssMiB(pid, 'VmRSS'), anon: rssMiB(pid, 'RssAnon'), file: rssMiB(pid, 'RssFile') };
  await stopProcess(sidecar);
  return figures;
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

/**
 * How the sidecar grows with its configuration: the same sidecar with 1, 10 and 64
 * upstreams (64 is the API's upper bound), one endpoint each, requests spread over all.
 */
async function upstreamGrowth(): Promise<(string | number)[][]> {
  const rows: (string | number)[][] = [];
  for (const count of UPSTREAM_COUNTS) {
    const [outbound, admin, control] = (await freePorts(3)) as [number, number, number];
    const registry = join(dir, `registry-${count}`);
    const names = Array.from({ length: count }, (_, i) => `echo-${i}`);
    for (const name of names)
      registerLocally(registry, {
        service: name,
        id: `${name}-1`,
        address: '127.0.0.1',
        port: upstreamPort,
        meta: {},
        tags: [],
        pid: process.pid,
      });
    const config = join(dir, `sidecar-${count}.json`);
    writeFileSync(
      config,
      JSON.stringify({
        service: { name: 'bench', port: 1 },
        listen: { outbound, admin, control },
        discovery: { mode: 'local' },
        upstreams: names.map((name) => ({ name, retries: { attempts: 2 }, timeout: '5s' })),
      }),
    );
    const sidecar = startSidecar(config, registry);
    try {
      await ready(`http://127.0.0.1:${admin}/readyz`);
      const paths = names.map((name) => `/v1/invoke/${name}/`);
      for (const path of paths)
        await waitFor(
          `${path} answers`,
          async () => (await fetch(`http://127.0.0.1:${outbound}${path}`)).ok,
          30_000,
        );
      const target: Target = {
        name: `${count}`,
        origin: `http://127.0.0.1:${outbound}`,
        path: '/',
        paths,
        pid: sidecar.pid,
      };
      await throughput({ ...target, path: paths[0] as string });
      const idle = rssMiB(sidecar.pid as number, 'VmRSS');
      const idleAnon = rssMiB(sidecar.pid as number, 'RssAnon');
      resetPeak(sidecar.pid as number);
      const cpuBefore = cpuMs(sidecar.pid as number);
      const rate = await fixedRate(target, RATE);
      const perRequest = ((cpuMs(sidecar.pid as number) - cpuBefore) * 1000) / rate.sent;
      rows.push([
        count,
        `${idle} MiB`,
        `${idleAnon} MiB`,
        `${rssMiB(sidecar.pid as number, 'VmHWM')} MiB`,
        rate.p50.toFixed(2),
        rate.p99.toFixed(2),
        perRequest.toFixed(0),
        rate.errors,
      ]);
      console.log(rows.at(-1)?.join(' | '));
    } finally {
      await stopProcess(sidecar);
    }
  }
  return rows;
}

try {
  const [sidecarOut, sidecarAdmin, sidecarControl, nodeProxyPort, haproxyPort, barePort] = (await freePorts(
    6,
  )) as number[];
  const registry = join(dir, 'registry');
  registerLocally(registry, {
    service: 'echo',
    id: 'echo-1',
    address: '127.0.0.1',
    port: upstreamPort,
    meta: {},
    tags: [],
    pid: process.pid,
  });
  const config = join(dir, 'sidecar.json');
  writeFileSync(
    config,
    JSON.stringify({
      service: { name: 'bench', port: 1 },
      listen: { outbound: sidecarOut, admin: sidecarAdmin, control: sidecarControl },
      discovery: { mode: 'local' },
      upstreams: [{ name: 'echo', retries: { attempts: 2 }, timeout: '5s' }],
    }),
  );
  const sidecar = startSidecar(config, registry);
  await ready(`http://127.0.0.1:${sidecarAdmin}/readyz`);

  const nodeProxy = start(
    process.execPath,
    [
      '-e',
      `const http=require('node:http');const agent=new http.Agent({keepAlive:true,maxSockets:256});
       http.createServer((req,res)=>{const up=http.request({host:'127.0.0.1',port:${upstreamPort},path:req.url,method:req.method,headers:req.headers,agent},(r)=>{res.writeHead(r.statusCode,r.headers);r.pipe(res);});up.on('error',()=>{res.statusCode=502;res.end();});req.pipe(up);}).listen(${nodeProxyPort},'127.0.0.1');`,
    ],
    'node-proxy',
  );
  await ready(`http://127.0.0.1:${nodeProxyPort}/`);
  // The floor for any Node sidecar: an idle Node process with node:http listening.
  const bareNode = start(
    process.execPath,
    [
      ...SIDECAR_FLAGS,
      '-e',
      `require('node:http').createServer((q,s)=>s.end()).listen(${barePort},'127.0.0.1');`,
    ],
    'bare-node',
  );
  await ready(`http://127.0.0.1:${barePort}/`);

  const targets: Target[] = [
    { name: 'direct', origin: `http://127.0.0.1:${upstreamPort}`, path: '/' },
    {
      name: 'aimesh sidecar',
      origin: `http://127.0.0.1:${sidecarOut}`,
      path: '/v1/invoke/echo/',
      pid: sidecar.pid,
    },
    { name: 'plain Node proxy', origin: `http://127.0.0.1:${nodeProxyPort}`, path: '/', pid: nodeProxy.pid },
  ];
  // HAProxy from Debian's archive, installed with apt-get when missing (as the test node's runc).
  installDebianPackages([{ binary: 'haproxy', debianPackage: 'haproxy' }], (m) => console.log(m));
  const haproxyBinary = spawnSync('sh', ['-c', 'command -v haproxy'], { encoding: 'utf8' }).stdout.trim();
  const haproxyVersion = haproxyBinary
    ? (/version (\S+)/.exec(spawnSync(haproxyBinary, ['-v'], { encoding: 'utf8' }).stdout)?.[1] ?? '')
    : '';
  if (haproxyBinary) {
    const cfg = join(dir, 'haproxy.cfg');
    writeFileSync(
      cfg,
      `global\n  maxconn 4096\n  nbthread 1\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\nfrontend f\n  bind 127.0.0.1:${haproxyPort}\n  default_backend b\nbackend b\n  http-reuse always\n  server s1 127.0.0.1:${upstreamPort}\n`,
    );
    const haproxy = start(haproxyBinary, ['-f', cfg, '-db'], 'haproxy');
    await ready(`http://127.0.0.1:${haproxyPort}/`);
    targets.push({
      name: `HAProxy ${haproxyVersion} (Debian, 1 thread)`,
      origin: `http://127.0.0.1:${haproxyPort}`,
      path: '/',
      pid: haproxy.pid,
    });
  }

  const idle = {
    rss: rssMiB(sidecar.pid as number, 'VmRSS'),
    anon: rssMiB(sidecar.pid as number, 'RssAnon'),
    file: rssMiB(sidecar.pid as number, 'RssFile'),
    bareRss: rssMiB(bareNode.pid as number, 'VmRSS'),
    bareAnon: rssMiB(bareNode.pid as number, 'RssAnon'),
  };
  await stopProcess(bareNode);
  const orchestrator = await orchestratorIdle(registry);

  const latencyRows: (string | number)[][] = [];
  const loadRows: (string | number)[][] = [];
  const cpuPerRequest = new Map<string, number>();
  const direct = { p50: 0, p99: 0 };
  for (const target of targets) {
    await throughput({ ...target }); // warm-up: JIT, connection pools
    const rate = await fixedRate(target, RATE);
    if (target.name === 'direct') Object.assign(direct, rate);
    const added =
      target.name === 'direct'
        ? '-'
        : `+${(rate.p50 - direct.p50).toFixed(2)} / +${(rate.p99 - direct.p99).toFixed(2)}`;
    latencyRows.push([target.name, rate.p50.toFixed(2), rate.p99.toFixed(2), added, rate.errors]);
    console.log(latencyRows[latencyRows.length - 1]?.join(' | '));
    if (!target.pid) continue;
    // Memory and CPU at the higher fixed rate; the peak counts from here.
    resetPeak(target.pid);
    const cpuBefore = cpuMs(target.pid);
    const load = await fixedRate(target, LOAD_RATE);
    const perRequest = ((cpuMs(target.pid) - cpuBefore) * 1000) / load.sent;
    cpuPerRequest.set(target.name, perRequest);
    const peakAtLoad = rssMiB(target.pid, 'VmHWM');
    const max = await throughput(target);
    loadRows.push([
      target.name,
      perRequest.toFixed(0),
      load.p99.toFixed(2),
      `${peakAtLoad} MiB`,
      max,
      `${rssMiB(target.pid, 'VmHWM')} MiB`,
    ]);
    console.log(loadRows[loadRows.length - 1]?.join(' | '));
  }

  // Where the sidecar's CPU goes: a fresh sidecar with --cpu-prof at the fixed rate.
  await stopProcess(sidecar);
  const profileDir = join(dir, 'profile');
  const profiled = startSidecar(
    config,
    registry,
    ['--cpu-prof', `--cpu-prof-dir=${profileDir}`],
    join(REPO_DIR, 'dist', 'cli', 'main.js'),
  );
  await ready(`http://127.0.0.1:${sidecarAdmin}/readyz`);
  const profileTarget = { ...targets[1], pid: profiled.pid } as Target;
  await throughput(profileTarget);
  await fixedRate(profileTarget, RATE);
  await stopProcess(profiled);
  const profile = summarizeCpuProfile(profileDir);
  const growth = await upstreamGrowth();

  const haproxyCpu = [...cpuPerRequest].find(([name]) => name.startsWith('HAProxy'))?.[1];
  const sidecarCpu = cpuPerRequest.get('aimesh sidecar');
  const cpuRatio =
    haproxyCpu && sidecarCpu
      ? `${(sidecarCpu / haproxyCpu).toFixed(1)}× HAProxy's`
      : 'no HAProxy in this run';
  writeSection(
    'sidecar-latency',
    'Sidecar: added latency, CPU per request, memory',
    'npm run bench:sidecar',
    [
      `### Latency at ${RATE} req/s`,
      '',
      table(['path', 'p50 ms', 'p99 ms', 'added p50 / p99 ms (vs direct)', 'errors'], latencyRows),
      '',
      `Fixed rate: ${RATE} req/s for ${SECONDS} s, latency from the scheduled send time (queueing counts). One upstream (Node HTTP server, ${BODY.length}-byte JSON body); the load generator (undici) and the upstream run on the same 2 cores as the proxy. The sidecar route has retries and a timeout configured, as in production.`,
      '',
      `### CPU and memory at ${LOAD_RATE} req/s, then throughput`,
      '',
      table(
        [
          'proxy',
          `CPU µs per request @ ${LOAD_RATE}/s`,
          `p99 ms @ ${LOAD_RATE}/s`,
          `peak RSS @ ${LOAD_RATE}/s`,
          `max req/s (${CONNECTIONS} conns)`,
          'peak RSS after max',
        ],
        loadRows,
      ),
      '',
      `CPU per request: user + system time from the proxy's own /proc/<pid>/stat over ${LOAD_RATE * SECONDS} requests, all threads. The sidecar's is ${cpuRatio}. Max req/s is a closed loop of ${CONNECTIONS} connections for ${SECONDS} s, shared with the load generator, so it is the machine's limit more than the proxy's.`,
      '',
      '### Sidecar memory idle',
      '',
      table(
        ['process', 'RSS', 'private (RssAnon)', 'file-backed (RssFile)'],
        [
          ['aimesh sidecar, idle after start', `${idle.rss} MiB`, `${idle.anon} MiB`, `${idle.file} MiB`],
          [
            'aimesh sidecar of a saga orchestrator (saga thread, file store), idle after start',
            `${orchestrator.rss} MiB`,
            `${orchestrator.anon} MiB`,
            `${orchestrator.file} MiB`,
          ],
          ['bare Node 24, node:http listening', `${idle.bareRss} MiB`, `${idle.bareAnon} MiB`, '-'],
        ],
      ),
      '',
      `The sidecar runs the bundle the image runs (image/bundle.ts), with the V8 flags the render puts in its container's NODE_OPTIONS for the default memory limit (${DEFAULT_SIDECAR_RESOURCES.limits.memory}): \`${SIDECAR_FLAGS.join(' ')}\`. File-backed RSS is mostly pages of the node binary: shared by every process of the same image on a node and reclaimable, but counted in RSS.`,
      '',
      '### Growth with the number of upstreams',
      '',
      table(
        [
          'upstreams',
          'RSS after warm-up',
          'private after warm-up',
          `peak RSS @ ${RATE}/s`,
          'p50 ms',
          'p99 ms',
          'CPU µs per request',
          'errors',
        ],
        growth,
      ),
      '',
      `A fresh sidecar per row with that many upstreams (one endpoint each, retries and a timeout; 64 is the most an AiService may list), every upstream called once, then ${RATE} req/s for ${SECONDS} s spread over all of them.`,
      '',
      `### Where the sidecar's CPU goes (--cpu-prof, ${RATE} req/s for ${SECONDS} s)`,
      '',
      "Profiled on tsc's build of the same sources (dist/), where each frame names its package; the figures above are the bundle the image runs.",
      '',
      profile,
    ].join('\n'),
  );
} finally {
  stopping = true;
  for (const child of children) child.kill('SIGTERM');
  await new Promise<void>((resolve) => upstream.close(() => resolve()));
  rmSync(dir, { recursive: true, force: true });
}
