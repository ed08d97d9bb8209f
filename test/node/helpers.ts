/**
 * Helpers of the node tests: the suoke-life example fitted to one 2-core node, waits on
 * pods, Consul's view of a service, and calls made from inside a pod.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { REPO_DIR } from '../env/components.js';
import { waitFor } from '../env/processes.js';
import type { Cluster } from '../env/node.js';

export const SUOKE = 'suoke-life';

interface Resource {
  kind: string;
  metadata: { name: string; namespace?: string };
  spec: Record<string, unknown>;
}

/**
 * The suoke-life example as the node runs it. Its 20 services ask for 44 pods and 500m CPU
 * per agent and diagnosis pod (about 14 CPUs of requests): on one 2-core node the scheduler
 * would leave most Pending. So every AiService runs one replica (autoscaling dropped), CPU and
 * memory requests are cut to what the test app needs, and the sidecar runs as a native
 * sidecar; everything else (upstreams, discovery, security, the saga) is the example's own.
 * The Secrets the example's env refers to (supplied by its operators) get test values.
 */
export function suokeLifeForOneNode(): { resources: Resource[]; images: string[]; ports: number[] } {
  const dir = join(REPO_DIR, 'examples', SUOKE);
  const resources = readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .flatMap((f) => parseAllDocuments(readFileSync(join(dir, f), 'utf8')).map((d) => d.toJS() as Resource))
    .filter((r) => r && typeof r === 'object' && 'kind' in r);
  const secrets = new Map<string, Set<string>>();
  const images: string[] = [];
  const ports: number[] = [];
  for (const resource of resources) {
    if (resource.kind !== 'AiService') continue;
    const spec = resource.spec;
    images.push(String(spec.image));
    for (const variable of (spec.env ?? []) as { secretKeyRef?: { name: string; key: string } }[]) {
      const ref = variable.secretKeyRef;
      if (ref) secrets.set(ref.name, (secrets.get(ref.name) ?? new Set()).add(ref.key));
    }
    ports.push(Number(spec.port));
    delete spec.autoscaling;
    spec.replicas = 1;
    spec.resources = { requests: { cpu: '10m', memory: '32Mi' }, limits: { memory: '256Mi' } };
    spec.sidecar = {
      ...(spec.sidecar as object | undefined),
      native: true,
      resources: { requests: { cpu: '10m', memory: '48Mi' }, limits: { memory: '256Mi' } },
    };
  }
  // The example reads Secrets its operators supply (database URL, JWT key): stand-ins here.
  const namespace = resources.find((r) => r.kind === 'AiService')?.metadata.namespace ?? SUOKE;
  for (const [name, keys] of secrets)
    resources.unshift({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name, namespace },
      stringData: Object.fromEntries([...keys].map((key) => [key, `test-${name}-${key}`])),
    } as unknown as Resource);
  return { resources, images, ports };
}

/**
 * Services started at once. Each pod starts two Node processes (app and sidecar), and the
 * rendered sidecar's liveness probe (10 s period, 3 failures, no startup allowance) restarts
 * a sidecar that is not listening within about 30 s: with all 20 services at once on 2 cores
 * that are also busy with other work, every sidecar gets too little CPU to start in time,
 * and they restart one another forever. Waves keep each start within the probe's patience.
 */
export const WAVE = Number(process.env.AIMESH_NODE_WAVE ?? 4);

/**
 * kubectl apply of the resources: Secrets and Sagas first (so an orchestrator's first sidecar
 * config already holds its sagas), then the AiServices WAVE at a time, each wave Ready before
 * the next. Returns the Ready pods.
 */
export async function applyInWaves(cluster: Cluster, resources: Resource[]): Promise<PodInfo[]> {
  const apply = async (batch: Resource[]) => {
    if (batch.length === 0) return;
    const applied = await cluster.kubectl(
      ['apply', '--server-side', '-f', '-'],
      batch.map((r) => stringify(r)).join('---\n'),
    );
    if (applied.code !== 0) throw new Error(`kubectl apply: ${applied.stderr}`);
  };
  const services = resources.filter((r) => r.kind === 'AiService');
  await apply(resources.filter((r) => r.kind !== 'AiService'));
  let ready: PodInfo[] = [];
  for (let i = 0; i < services.length; i += WAVE) {
    await apply(services.slice(i, i + WAVE));
    const namespace = services[0]?.metadata.namespace ?? SUOKE;
    ready = await waitForReadyPods(
      cluster,
      namespace,
      Math.min(i + WAVE, services.length),
      undefined,
      600_000,
    );
  }
  return ready;
}

export interface PodInfo {
  name: string;
  ip: string;
  phase: string;
  ready: boolean;
  labels: Record<string, string>;
  initContainers: { name: string; restartPolicy?: string }[];
  statuses: { name: string; ready: boolean; restartCount: number; containerID?: string }[];
}

export async function pods(cluster: Cluster, namespace: string, selector?: string): Promise<PodInfo[]> {
  const result = await cluster.kubectl([
    'get',
    'pods',
    '-n',
    namespace,
    ...(selector ? ['-l', selector] : []),
    '-o',
    'json',
  ]);
  if (result.code !== 0) throw new Error(result.stderr);
  const list = JSON.parse(result.stdout) as {
    items: {
      metadata: { name: string; labels?: Record<string, string>; deletionTimestamp?: string };
      spec: { initContainers?: { name: string; restartPolicy?: string }[] };
      status: {
        phase: string;
        podIP?: string;
        conditions?: { type: string; status: string }[];
        containerStatuses?: PodInfo['statuses'];
        initContainerStatuses?: PodInfo['statuses'];
      };
    }[];
  };
  return list.items
    .filter((item) => !item.metadata.deletionTimestamp)
    .map((item) => ({
      name: item.metadata.name,
      ip: item.status.podIP ?? '',
      phase: item.status.phase,
      ready: item.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false,
      labels: item.metadata.labels ?? {},
      initContainers: item.spec.initContainers ?? [],
      statuses: [...(item.status.initContainerStatuses ?? []), ...(item.status.containerStatuses ?? [])],
    }));
}

export async function waitForReadyPods(
  cluster: Cluster,
  namespace: string,
  count: number,
  selector?: string,
  timeoutMs = 240_000,
): Promise<PodInfo[]> {
  let last: PodInfo[] = [];
  await waitFor(
    `${count} Ready pods in ${namespace}${selector ? ` (${selector})` : ''}`,
    async () => {
      last = await pods(cluster, namespace, selector);
      return last.length === count && last.every((p) => p.ready);
    },
    timeoutMs,
  ).catch(async (error: unknown) => {
    const table = await cluster.kubectl(['get', 'pods', '-n', namespace, '-o', 'wide']);
    throw new Error(`${String(error)}\n${table.stdout}`, { cause: error });
  });
  return last;
}

export interface ConsulInstance {
  id: string;
  address: string;
  port: number;
  status: string;
}

/** The instances Consul has for a service, with their aggregated health. */
export async function consulInstances(cluster: Cluster, service: string): Promise<ConsulInstance[]> {
  const response = await fetch(`http://${cluster.consul.address}/v1/health/service/${service}`);
  const entries = (await response.json()) as {
    Service: { ID: string; Address: string; Port: number };
    Checks: { Status: string }[];
  }[];
  return entries.map((e) => ({
    id: e.Service.ID,
    address: e.Service.Address,
    port: e.Service.Port,
    status: e.Checks.every((c) => c.Status === 'passing') ? 'passing' : 'not passing',
  }));
}

/** A request made inside a pod: the test app forwards /loopback/<port>/... to its loopback. */
export async function fromPod(
  pod: PodInfo,
  port: number,
  path: string,
  init: { method?: string; body?: unknown } = {},
): Promise<{ status: number; body: string }> {
  const response = await fetch(`http://${pod.ip}:8080/loopback/${port}${path}`, {
    method: init.method ?? 'GET',
    headers: { 'content-type': 'application/json' },
    ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
    signal: AbortSignal.timeout(150_000),
  });
  return { status: response.status, body: await response.text() };
}
