import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { REPO_DIR } from '../env/components.js';
import { BUILT_ENTRY } from '../../image/bundle.js';
import {
  freePort,
  kubeVersionFlag,
  runHelm,
  startProcess,
  waitFor,
  type ControlPlane,
  type ManagedProcess,
} from '../env/index.js';

export interface OperatorProcess {
  process: ManagedProcess;
  probePort: number;
  metrics: () => Promise<string>;
  /** Sum of a counter's samples whose labels match `filter`. */
  counter: (name: string, filter?: (labels: string) => boolean) => Promise<number>;
  isLeader: () => Promise<boolean>;
}

export const OPERATOR_NAMESPACE = 'aimesh-system';
const RELEASE = 'aimesh';
/** The chart names a release "aimesh" aimesh-operator (charts/aimesh-operator/templates/_helpers.tpl). */
const FULLNAME = 'aimesh-operator';
const RBAC_KINDS = ['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding'];

/**
 * Installs the Helm chart's ServiceAccount and RBAC (rendered with `helm template`) and
 * returns a kubeconfig acting as that ServiceAccount: the operator under test has exactly
 * the permissions the chart grants, no more.
 */
export async function installOperatorIdentity(
  cluster: Pick<ControlPlane, 'kubectl' | 'serviceAccountKubeconfig'>,
): Promise<string> {
  const rendered = await runHelm([
    'template',
    RELEASE,
    join(REPO_DIR, 'charts', 'aimesh-operator'),
    '--namespace',
    OPERATOR_NAMESPACE,
    kubeVersionFlag(),
  ]);
  if (rendered.code !== 0) throw new Error(`helm template: ${rendered.stderr}`);
  const rbac = parseAllDocuments(rendered.stdout)
    .map((d) => d.toJS() as { kind?: string } | null)
    .filter((o) => o?.kind && RBAC_KINDS.includes(o.kind));
  await cluster.kubectl(['create', 'namespace', OPERATOR_NAMESPACE]);
  const applied = await cluster.kubectl(
    ['apply', '-f', '-'],
    JSON.stringify({ kind: 'List', apiVersion: 'v1', items: rbac }),
  );
  if (applied.code !== 0) throw new Error(`applying the chart's RBAC: ${applied.stderr}`);
  return cluster.serviceAccountKubeconfig(OPERATOR_NAMESPACE, FULLNAME);
}

/** Runs `aimesh operator` as its own process, as it runs in a cluster. */
export async function startOperator(
  kubeconfig: string,
  identity: string,
  logDir: string,
  extraArgs: string[] = [],
  run: {
    compiled?: boolean;
    nodeArgs?: string[];
    leaseNamespace?: string;
    env?: Record<string, string>;
  } = {},
): Promise<OperatorProcess> {
  const probePort = await freePort();
  // Benchmarks run the bundle `npm run build` writes, as the image does; tests run the
  // sources through tsx so they need no build step.
  const entry = run.compiled ? [BUILT_ENTRY] : ['--import', 'tsx', join(REPO_DIR, 'cli', 'main.ts')];
  const child = startProcess(
    `operator-${identity}`,
    // node itself, not the tsx wrapper, so the pid is the operator's (kill -9 must kill it).
    process.execPath,
    [
      ...(run.nodeArgs ?? []),
      ...entry,
      'operator',
      `--kubeconfig=${kubeconfig}`,
      `--probe-address=127.0.0.1:${probePort}`,
      `--identity=${identity}`,
      `--lease-namespace=${run.leaseNamespace ?? OPERATOR_NAMESPACE}`,
      ...extraArgs,
    ],
    logDir,
    run.env,
  );
  const base = `http://127.0.0.1:${probePort}`;
  await waitFor(`operator ${identity} /healthz`, async () => (await fetch(`${base}/healthz`)).ok, 60_000);
  const metrics = async () => (await fetch(`${base}/metrics`)).text();
  const counter = async (name: string, filter: (labels: string) => boolean = () => true) => {
    let sum = 0;
    for (const line of (await metrics()).split('\n')) {
      const match = new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`).exec(line);
      if (match && filter(match[1] ?? '')) sum += Number(match[2]);
    }
    return sum;
  };
  return {
    process: child,
    probePort,
    metrics,
    counter,
    isLeader: async () => (await counter('aimesh_operator_is_leader')) === 1,
  };
}
