/**
 * The injection webhook on a test control plane, for the e2e test and the admission
 * benchmark: the chart's RBAC, Secret and MutatingWebhookConfiguration (rendered with a
 * `url:` clientConfig at 127.0.0.1, since no node runs to host a Service's endpoints),
 * and the operator serving the webhook there as the chart's ServiceAccount.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { REPO_DIR } from '../env/components.js';
import {
  freePort,
  kubeVersionFlag,
  requireBinary,
  runHelm,
  waitFor,
  type ControlPlane,
} from '../env/index.js';
import { OPERATOR_NAMESPACE, startOperator, type OperatorProcess } from './operator-process.js';

export const RELEASE = 'aimesh';
export const FULLNAME = 'aimesh-operator';
export const WEBHOOK_SECRET = `${FULLNAME}-webhook-tls`;
const INSTALLED = [
  'ServiceAccount',
  'ClusterRole',
  'ClusterRoleBinding',
  'Role',
  'RoleBinding',
  'Secret',
  'MutatingWebhookConfiguration',
  'ValidatingWebhookConfiguration',
];

export interface InstalledWebhook {
  /** Acts as the chart's ServiceAccount. */
  kubeconfig: string;
  port: number;
}

export interface CommandOutput {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command with stdin closed unless there is input: a command that exits without
 * reading its input must not fail the test with EPIPE.
 */
export function run(
  command: string,
  args: string[],
  env: Record<string, string>,
  input?: string,
): Promise<CommandOutput> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: { ...process.env, ...env },
      stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    if (input !== undefined) {
      child.stdin?.once('error', () => undefined);
      child.stdin?.end(input);
    }
  });
}

export function kubectlOf(cluster: ControlPlane) {
  return (args: string[], input?: string) =>
    run(requireBinary('kubectl'), args, { KUBECONFIG: cluster.kubeconfig }, input);
}

export async function installWebhook(
  cluster: ControlPlane,
  values: string[] = [],
): Promise<InstalledWebhook> {
  const kubectl = kubectlOf(cluster);
  const port = await freePort();
  const rendered = await runHelm([
    'template',
    RELEASE,
    join(REPO_DIR, 'charts', 'aimesh-operator'),
    '--namespace',
    OPERATOR_NAMESPACE,
    kubeVersionFlag(),
    '--set',
    `webhook.url=https://127.0.0.1:${port}`,
    '--set',
    'webhook.hosts={127.0.0.1}',
    ...values.flatMap((v) => ['--set', v]),
  ]);
  if (rendered.code !== 0) throw new Error(rendered.stderr);
  const items = parseAllDocuments(rendered.stdout)
    .map((d) => d.toJS() as { kind?: string } | null)
    .filter((m) => m?.kind !== undefined && INSTALLED.includes(m.kind));
  await kubectl(['create', 'namespace', OPERATOR_NAMESPACE]);
  const applied = await kubectl(
    ['apply', '-f', '-'],
    JSON.stringify({ apiVersion: 'v1', kind: 'List', items }),
  );
  if (applied.code !== 0) throw new Error(`applying the chart's webhook objects: ${applied.stderr}`);
  return { kubeconfig: await cluster.serviceAccountKubeconfig(OPERATOR_NAMESPACE, FULLNAME), port };
}

/** Starts the operator with its admission server on the installed webhook's port; resolves once it answers. */
export async function startInjectingOperator(
  cluster: ControlPlane,
  webhook: InstalledWebhook,
  sidecarImage: string,
  missScanSeconds = 2,
): Promise<OperatorProcess> {
  const operator = await startOperator(
    webhook.kubeconfig,
    `inject-${Date.now()}`,
    join(cluster.dir, 'logs'),
    [
      `--webhook-address=127.0.0.1:${webhook.port}`,
      '--webhook-hosts=127.0.0.1',
      `--webhook-secret=${WEBHOOK_SECRET}`,
      `--webhook-configuration=${FULLNAME}`,
      '--webhook-cert-check-seconds=1',
      `--miss-scan-seconds=${missScanSeconds}`,
      `--sidecar-image=${sidecarImage}`,
    ],
  );
  const kubectl = kubectlOf(cluster);
  await waitFor('the operator ready with its webhook', async () => {
    const ready = await fetch(`http://127.0.0.1:${operator.probePort}/readyz`);
    const got = await kubectl(['get', 'mutatingwebhookconfiguration', FULLNAME, '-o', 'json']);
    const configuration = JSON.parse(got.stdout) as { webhooks: { clientConfig: { caBundle?: string } }[] };
    return ready.ok && configuration.webhooks.every((w) => w.clientConfig.caBundle);
  });
  return operator;
}
