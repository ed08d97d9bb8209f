/**
 * What the operator benchmarks share: N AiServices on a real control plane, the operator
 * run as the chart runs it (its ServiceAccount, its V8 flags), and what it costs: time,
 * API writes by verb and kind, reconciles, and memory sampled inside the process.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { cpus } from 'node:os';
import { REPO_DIR } from '../test/env/components.js';
import { waitFor, type ControlPlane } from '../test/env/index.js';
import { startOperator, type OperatorProcess } from '../test/e2e/operator-process.js';
import type { KubernetesObject } from '@kubernetes/client-node';
import { KubeClient } from '../operator/kube/client.js';
import { loadKubeCredentials } from '../operator/kube/config.js';
import { AI_SERVICE } from '../operator/kube/resources.js';
import { cpuMs } from './report.js';

/** The V8 flags the chart gives the operator (charts/aimesh-operator/values.yaml, NODE_OPTIONS). */
export function chartNodeArgs(): string[] {
  return (chartValues().nodeOptions ?? '').split(/\s+/).filter(Boolean);
}

/** The chart's concurrent reconciles (operator.workers), passed as the chart passes it. */
export function chartWorkers(): number {
  return chartValues().workers ?? 2;
}

function chartValues(): { nodeOptions?: string; workers?: number } {
  const values = parse(readFileSync(join(REPO_DIR, 'charts', 'aimesh-operator', 'values.yaml'), 'utf8')) as {
    operator: { nodeOptions?: string; workers?: number };
  };
  return values.operator;
}

export const CHILDREN_PER_SERVICE = 9;

export function aiService(namespace: string, i: number, count: number) {
  return {
    apiVersion: 'aimesh.io/v1alpha1',
    kind: 'AiService',
    metadata: { name: `svc-${i}`, namespace },
    spec: {
      image: `registry.example.com/bench/svc-${i}:1.0.0`,
      replicas: 2,
      upstreams: [
        {
          name: `svc-${(i + 1) % count}`,
          timeout: '5s',
          retries: { attempts: 2, perTryTimeout: '2s' },
          loadBalancer: { strategy: 'least-request' },
        },
      ],
      security: { mtls: 'STRICT', allowedCallers: [{ serviceAccount: `svc-${(i + count - 1) % count}` }] },
    },
  };
}

export async function applyAiServices(
  cluster: ControlPlane,
  namespace: string,
  count: number,
): Promise<void> {
  await cluster.kubectl(['create', 'namespace', namespace]);
  const list = {
    apiVersion: 'v1',
    kind: 'List',
    items: Array.from({ length: count }, (_, i) => aiService(namespace, i, count)),
  };
  const applied = await cluster.kubectl(['apply', '--server-side', '-f', '-'], stringify(list));
  if (applied.code !== 0) throw new Error(applied.stderr);
}

/**
 * Waits until every one of `count` AiServices in the namespace reports its generation
 * observed. It watches them (one list, then a stream of changes)
 * rather than listing them over and over: kubectl listing 1000 AiServices every 200 ms took
 * a good share of the API server's CPU, on the same 2 cores as what is measured.
 */
export async function waitConverged(
  cluster: ControlPlane,
  namespace: string,
  count: number,
  timeoutMs: number,
): Promise<void> {
  const client = new KubeClient(await loadKubeCredentials({ kubeconfig: cluster.kubeconfig }));
  const observed = new Set<string>();
  const see = (object: KubernetesObject & { status?: { observedGeneration?: number } }) => {
    const name = object.metadata?.name ?? '';
    if (object.status?.observedGeneration === object.metadata?.generation) observed.add(name);
    else observed.delete(name);
  };
  const deadline = Date.now() + timeoutMs;
  let resourceVersion: string | undefined;
  while (observed.size < count) {
    if (Date.now() > deadline)
      throw new Error(`timed out: ${observed.size} of ${count} AiServices converged after ${timeoutMs} ms`);
    if (resourceVersion === undefined) {
      const list = await client.list(AI_SERVICE, { namespace });
      observed.clear();
      for (const item of list.items) see(item);
      resourceVersion = list.resourceVersion;
      continue;
    }
    // One watch until it ends (the server's timeout, an error, or all converged); then again.
    await new Promise<void>((resolve) => {
      let handle: { abort: () => void } | undefined;
      const timer = setTimeout(() => handle?.abort(), Math.max(0, deadline - Date.now()));
      const finish = () => {
        clearTimeout(timer);
        resolve();
      };
      client
        .watch(
          AI_SERVICE,
          { namespace, resourceVersion: resourceVersion as string },
          (type, object) => {
            if (type === 'ERROR') {
              resourceVersion = undefined; // too old: list again
              handle?.abort();
              return;
            }
            if (object.metadata?.resourceVersion) resourceVersion = object.metadata.resourceVersion;
            if (type === 'BOOKMARK') return;
            if (type === 'DELETED') observed.delete(object.metadata?.name ?? '');
            else see(object);
            if (observed.size >= count) handle?.abort();
          },
          finish,
        )
        .then(
          (started) => {
            handle = started;
            if (observed.size >= count) started.abort();
          },
          () => {
            resourceVersion = undefined;
            finish();
          },
        );
    });
  }
}

export async function countChildren(cluster: ControlPlane, namespace: string): Promise<number> {
  const got = await cluster.kubectl([
    'get',
    'serviceaccount,configmap,service,deployment,pdb,destinationrule,virtualservice,peerauthentication,authorizationpolicy',
    '-n',
    namespace,
    '-l',
    'app.kubernetes.io/managed-by=aimesh-operator',
    '-o',
    'name',
  ]);
  return got.stdout.split('\n').filter(Boolean).length;
}

/** API writes (Lease renewals excluded), in all and by "verb kind". */
export async function writesOf(op: OperatorProcess): Promise<{ total: number; byKind: Map<string, number> }> {
  const byKind = new Map<string, number>();
  let total = 0;
  for (const line of (await op.metrics()).split('\n')) {
    const match = /^aimesh_operator_api_writes_total\{([^}]*)\} (\S+)$/.exec(line);
    if (!match) continue;
    const labels = Object.fromEntries(
      [...(match[1] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]] as const),
    );
    if (labels.kind === 'Lease') continue;
    const value = Number(match[2]);
    if (value === 0) continue;
    total += value;
    byKind.set(`${labels.verb} ${labels.kind}`, value);
  }
  return { total, byKind };
}

/** "apply-status AiService 10, create Event 3", or "none". */
export function describeWrites(byKind: Map<string, number>): string {
  const parts = [...byKind].sort(([, a], [, b]) => b - a).map(([what, n]) => `${what} ${n}`);
  return parts.length > 0 ? parts.join(', ') : 'none';
}

/**
 * Node flags that make the operator append `process.memoryUsage()` and the V8 heap spaces'
 * sizes to `file` every `intervalMs` (one JSON line each): where the resident memory goes.
 */
export function memorySamplerArgs(file: string, intervalMs = 250): string[] {
  const code = [
    'import { appendFileSync } from "node:fs";',
    'import { getHeapSpaceStatistics } from "node:v8";',
    'setInterval(() => {',
    '  const spaces = Object.fromEntries(getHeapSpaceStatistics().map((s) => [s.space_name, s.space_used_size]));',
    `  appendFileSync(${JSON.stringify(file)}, JSON.stringify({ t: Date.now(), ...process.memoryUsage(), spaces }) + "\\n");`,
    `}, ${intervalMs}).unref();`,
  ].join('\n');
  return ['--import', `data:text/javascript,${encodeURIComponent(code)}`];
}

export interface MemorySample {
  t: number;
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  spaces: Record<string, number>;
}

export function readSamples(file: string): MemorySample[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as MemorySample);
}

/** The sample with the highest RSS, and the highest heap used seen. */
export function memoryPeaks(samples: MemorySample[]): { atPeak?: MemorySample; heapUsedMax: number } {
  let atPeak: MemorySample | undefined;
  let heapUsedMax = 0;
  for (const s of samples) {
    if (!atPeak || s.rss > atPeak.rss) atPeak = s;
    heapUsedMax = Math.max(heapUsedMax, s.heapUsed);
  }
  return { atPeak, heapUsedMax };
}

export const mib = (bytes: number) => Math.round(bytes / 2 ** 20);

/** "rss 180, heap used 90 of 120 (old 60, new 8, code 4, large objects 12), external 10, array buffers 2" (MiB). */
export function describeSample(s: MemorySample): string {
  const sp = s.spaces;
  return (
    `RSS ${mib(s.rss)} MiB: V8 heap ${mib(s.heapTotal)} MiB reserved, ${mib(s.heapUsed)} used ` +
    `(old ${mib(sp.old_space ?? 0)}, young ${mib(sp.new_space ?? 0)}, code ${mib(sp.code_space ?? 0)}, ` +
    `large objects ${mib(sp.large_object_space ?? 0)}, trusted ${mib((sp.trusted_space ?? 0) + (sp.trusted_large_object_space ?? 0))}); ` +
    `external ${mib(s.external)} MiB, of which array buffers ${mib(s.arrayBuffers)} MiB; ` +
    `the rest (${mib(s.rss - s.heapTotal - s.external)} MiB) is code, Node and native allocations`
  );
}

/** Peak resident memory of a process, from the kernel (VmHWM). */
export function peakRssMiB(pid: number): number {
  const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Math.round(Number(match?.[1] ?? 0) / 1024);
}

/** Waits until the operator's writes stop changing and its queue is empty for 5 s. */
export async function waitQuiet(operator: OperatorProcess): Promise<void> {
  let last = -1;
  await waitFor(
    'operator quiet for 5 s',
    async () => {
      const now = (await writesOf(operator)).total;
      const quiet = now === last && (await operator.counter('aimesh_operator_workqueue_depth')) === 0;
      last = now;
      if (!quiet) await new Promise((r) => setTimeout(r, 5000));
      return quiet;
    },
    600_000,
  );
}

export interface OperatorRun {
  operator: OperatorProcess;
  samplesFile: string;
}

/**
 * The environment the chart's Deployment gives the operator besides NODE_OPTIONS
 * (charts/aimesh-operator/templates/deployment.yaml): read from the template, so the
 * benchmark runs what the chart installs.
 */
export function chartEnv(): Record<string, string> {
  const template = readFileSync(
    join(REPO_DIR, 'charts', 'aimesh-operator', 'templates', 'deployment.yaml'),
    'utf8',
  );
  // glibc's malloc settings, which the template gives as literal values.
  const env: Record<string, string> = {};
  for (const match of template.matchAll(/- name: (MALLOC_\w+)\s+value: "([^"]*)"/g))
    env[match[1] as string] = match[2] as string;
  return env;
}

/** Starts the operator as the chart runs it, sampling its memory into the log folder. */
export async function startSampledOperator(
  kubeconfig: string,
  identity: string,
  logs: string,
  nodeArgs: string[],
): Promise<OperatorRun> {
  const samplesFile = join(logs, `memory-${identity}.jsonl`);
  const operator = await startOperator(kubeconfig, identity, logs, [`--workers=${chartWorkers()}`], {
    compiled: true,
    nodeArgs: [...nodeArgs, ...memorySamplerArgs(samplesFile)],
    env: chartEnv(),
  });
  return { operator, samplesFile };
}

/**
 * CPU time each process spends from now until the returned function is called: where the
 * machine's time goes while the operator converges (the API server, etcd, the controller
 * manager, the operator), since all of them share its cores.
 */
export function cpuSplit(processes: Record<string, number>): () => { name: string; ms: number }[] {
  const before = Object.entries(processes).map(([name, pid]) => ({ name, pid, ms: cpuMs(pid) }));
  return () => before.map(({ name, pid, ms }) => ({ name, ms: cpuMs(pid) - ms })).sort((a, b) => b.ms - a.ms);
}

/** "kube-apiserver 61.2 s (51% of 2 cores)", ... for a window of `wallMs`. */
export function describeCpu(split: { name: string; ms: number }[], wallMs: number): string {
  const capacity = wallMs * cpus().length;
  return split
    .map(({ name, ms }) => `${name} ${(ms / 1000).toFixed(1)} s (${Math.round((ms / capacity) * 100)}%)`)
    .join(', ');
}

export interface Convergence {
  convergeMs: number;
  /** CPU by process while converging: what the time was spent on. */
  cpu: string;
  /** The operator's own CPU time while converging, apart from the control plane's. */
  operatorCpuMs: number;
  children: number;
  writes: { total: number; byKind: Map<string, number> };
  reconciles: number;
  peakRss: number;
}

/**
 * What converging `count` AiServices costs a just-started operator: the time until each
 * reports its generation observed and the CPU spent meanwhile; then, once the operator has
 * stopped writing (status follows the Deployments' own status, which the controller manager
 * fills in after creating them), its writes, reconciles and peak RSS. Checks every child exists.
 */
export async function measureConvergence(
  cluster: ControlPlane,
  operator: OperatorProcess,
  namespace: string,
  count: number,
  timeoutMs: number,
): Promise<Convergence> {
  const started = Date.now();
  const cpu = cpuSplit({ ...cluster.pids, operator: operator.process.pid });
  await waitConverged(cluster, namespace, count, timeoutMs);
  const convergeMs = Date.now() - started;
  const split = cpu();
  const spent = describeCpu(split, convergeMs);
  await waitQuiet(operator);
  const children = await countChildren(cluster, namespace);
  if (children !== count * CHILDREN_PER_SERVICE)
    throw new Error(`expected ${count * CHILDREN_PER_SERVICE} children, found ${children}`);
  return {
    convergeMs,
    cpu: spent,
    operatorCpuMs: split.find((p) => p.name === 'operator')?.ms ?? 0,
    children,
    writes: await writesOf(operator),
    reconciles: await operator.counter('aimesh_operator_reconciles_total'),
    peakRss: peakRssMiB(operator.process.pid),
  };
}
