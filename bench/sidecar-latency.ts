/**
 * `npm run bench:sidecar`: the latency the aimesh sidecar adds and its throughput, next to
 * a direct call, HAProxy (the Debian package, when installed) and a plain Node proxy, in
 * one run on one machine; and the sidecar's memory idle and under load.
 *
 * Fixed rate: requests are scheduled at a constant rate and latency counts from the
 * scheduled time, so queueing shows (no coordinated omission). Throughput: a closed loop
 * with a fixed number of connections for a fixed time.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'undici';
import { registerLocally } from '../sidecar/discovery/index.js';
import { REPO_DIR } from '../test/env/components.js';
import { freePorts, waitFor } from '../test/env/index.js';
import { table, writeSection } from './report.js';

const RATE = Number(process.env.AIMESH_BENCH_RATE ?? 500);
const SECONDS = Number(process.env.AIMESH_BENCH_SECONDS ?? 10);
const CONNECTIONS = Number(process.env.AIMESH_BENCH_CONNECTIONS ?? 32);
const BODY = JSON.stringify({ ok: true, service: 'echo', padding: 'x'.repeat(200) });

interface Target {
  name: string;
  origin: string;
  path: string;
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

function rssMiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const match = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Math.round(Number(match?.[1] ?? 0) / 1024);
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

async function fixedRate(target: Target): Promise<{ p50: number; p99: number; errors: number }> {
  const pool = new Pool(target.origin, { connections: 64 });
  const latencies: number[] = [];
  let errors = 0;
  const total = RATE * SECONDS;
  const start = performance.now();
  const pending: Promise<void>[] = [];
  for (let i = 0; i < total; i++) {
    const scheduled = start + (i * 1000) / RATE;
    const wait = scheduled - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    // From the scheduled time when running late (queueing counts), else from the send.
    const origin = Math.min(scheduled, performance.now());
    pending.push(
      pool
        .request({ method: 'GET', path: target.path })
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
  return { p50: percentile(latencies, 50), p99: percentile(latencies, 99), errors };
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

try {
  const [sidecarOut, sidecarAdmin, sidecarControl, nodeProxyPort, haproxyPort] = (await freePorts(
    5,
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
  const sidecar = start(
    process.execPath,
    [
      // The compiled CLI, as the container image runs it (npm run build first).
      join(REPO_DIR, 'dist', 'cli', 'main.js'),
      'sidecar',
      `--config=${config}`,
      '--admin-address=127.0.0.1',
      `--local-registry=${registry}`,
    ],
    'sidecar',
  );
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
  const haproxyBinary = spawnSync('sh', ['-c', 'command -v haproxy'], { encoding: 'utf8' }).stdout.trim();
  if (haproxyBinary) {
    const cfg = join(dir, 'haproxy.cfg');
    writeFileSync(
      cfg,
      `global\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\nfrontend f\n  bind 127.0.0.1:${haproxyPort}\n  default_backend b\nbackend b\n  http-reuse always\n  server s1 127.0.0.1:${upstreamPort}\n`,
    );
    const haproxy = start(haproxyBinary, ['-f', cfg, '-db'], 'haproxy');
    await ready(`http://127.0.0.1:${haproxyPort}/`);
    targets.push({
      name: 'HAProxy 2.6 (Debian)',
      origin: `http://127.0.0.1:${haproxyPort}`,
      path: '/',
      pid: haproxy.pid,
    });
  }

  const sidecarIdle = rssMiB(sidecar.pid as number, 'VmRSS');
  const rows: (string | number)[][] = [];
  for (const target of targets) {
    await throughput({ ...target }); // warm-up: JIT, connection pools
    const rate = await fixedRate(target);
    const max = await throughput(target);
    rows.push([
      target.name,
      rate.p50.toFixed(2),
      rate.p99.toFixed(2),
      rate.errors,
      max,
      target.pid ? `${rssMiB(target.pid, 'VmHWM')} MiB` : '-',
    ]);
    console.log(rows[rows.length - 1]?.join(' | '));
  }
  const header = [
    'path',
    `p50 ms @ ${RATE}/s`,
    `p99 ms @ ${RATE}/s`,
    'errors',
    `max req/s (${CONNECTIONS} conns)`,
    'proxy peak RSS',
  ];
  writeSection(
    'sidecar-latency',
    'Sidecar: added latency and throughput',
    'npm run bench:sidecar',
    `${table(header, rows)}\n\nSidecar RSS idle: ${sidecarIdle} MiB. One upstream (Node HTTP server, ${BODY.length}-byte JSON body) and the load generator (undici) run on the same 2 cores as the proxy, so throughput is shared with them. Fixed rate: ${RATE} req/s for ${SECONDS} s, latency from the scheduled send time. The sidecar route has retries and a timeout configured, as in production.\n`,
  );
} finally {
  stopping = true;
  for (const child of children) child.kill('SIGTERM');
  await new Promise<void>((resolve) => upstream.close(() => resolve()));
  rmSync(dir, { recursive: true, force: true });
}
