/**
 * `npm run bench:operator`: how long the operator takes to converge N AiServices on a real
 * control plane, how many API writes it makes, and its peak memory; then how many writes
 * a restart makes when nothing changed (the answer should be none).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { startControlPlane, waitFor, type ControlPlane } from '../test/env/index.js';
import {
  installOperatorIdentity,
  startOperator,
  type OperatorProcess,
} from '../test/e2e/operator-process.js';
import { table, writeSection } from './report.js';

const COUNT = Number(process.env.AIMESH_BENCH_AISERVICES ?? 1000);
/** The V8 flags the chart gives the operator (charts/aimesh-operator/values.yaml, NODE_OPTIONS). */
const NODE_ARGS = ['--max-old-space-size=160'];
const RUN = { compiled: true, nodeArgs: NODE_ARGS };
const NAMESPACE = 'bench';
const CHILDREN_PER_SERVICE = 9;

function aiService(i: number) {
  return {
    apiVersion: 'aimesh.io/v1alpha1',
    kind: 'AiService',
    metadata: { name: `svc-${i}`, namespace: NAMESPACE },
    spec: {
      image: `registry.example.com/bench/svc-${i}:1.0.0`,
      replicas: 2,
      upstreams: [
        {
          name: `svc-${(i + 1) % COUNT}`,
          timeout: '5s',
          retries: { attempts: 2, perTryTimeout: '2s' },
          loadBalancer: { strategy: 'least-request' },
        },
      ],
      security: { mtls: 'STRICT', allowedCallers: [{ serviceAccount: `svc-${(i + COUNT - 1) % COUNT}` }] },
    },
  };
}

/** Peak resident memory of a process, from the kernel (VmHWM). */
function peakRssMiB(pid: number): number {
  const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Math.round(Number(match?.[1] ?? 0) / 1024);
}

async function converged(cluster: ControlPlane): Promise<number> {
  const got = await cluster.kubectl(['get', 'aiservices', '-n', NAMESPACE, '-o', 'json']);
  const items = (
    JSON.parse(got.stdout) as {
      items: { metadata: { generation: number }; status?: { observedGeneration?: number } }[];
    }
  ).items;
  return items.filter((i) => i.status?.observedGeneration === i.metadata.generation).length;
}

async function countChildren(cluster: ControlPlane): Promise<number> {
  const got = await cluster.kubectl([
    'get',
    'serviceaccount,configmap,service,deployment,pdb,destinationrule,virtualservice,peerauthentication,authorizationpolicy',
    '-n',
    NAMESPACE,
    '-l',
    'app.kubernetes.io/managed-by=aimesh-operator',
    '-o',
    'name',
  ]);
  return got.stdout.split('\n').filter(Boolean).length;
}

const writes = (op: OperatorProcess) =>
  op.counter('aimesh_operator_api_writes_total', (labels) => !labels.includes('kind="Lease"'));

const cluster = await startControlPlane();
const operators: OperatorProcess[] = [];
try {
  await cluster.kubectl(['create', 'namespace', NAMESPACE]);
  const kubeconfig = await installOperatorIdentity(cluster);
  const logs = join(cluster.dir, 'logs');
  const list = {
    apiVersion: 'v1',
    kind: 'List',
    items: Array.from({ length: COUNT }, (_, i) => aiService(i)),
  };
  const applied = await cluster.kubectl(['apply', '--server-side', '-f', '-'], stringify(list));
  if (applied.code !== 0) throw new Error(applied.stderr);

  const operator = await startOperator(kubeconfig, 'bench', logs, [], RUN);
  operators.push(operator);
  const started = Date.now();
  await waitFor(`${COUNT} AiServices converged`, async () => (await converged(cluster)) === COUNT, 1_800_000);
  const convergeMs = Date.now() - started;
  // Status follows the Deployments' own status, which kube-controller-manager fills in
  // after creating them: wait until the operator has stopped writing before stopping it.
  let lastWrites = -1;
  await waitFor(
    'operator quiet for 5 s',
    async () => {
      const now = await writes(operator);
      const quiet = now === lastWrites && (await operator.counter('aimesh_operator_workqueue_depth')) === 0;
      lastWrites = now;
      if (!quiet) await new Promise((r) => setTimeout(r, 5000));
      return quiet;
    },
    600_000,
  );
  const children = await countChildren(cluster);
  if (children !== COUNT * CHILDREN_PER_SERVICE)
    throw new Error(`expected ${COUNT * CHILDREN_PER_SERVICE} children, found ${children}`);
  const firstWrites = await writes(operator);
  const reconciles = await operator.counter('aimesh_operator_reconciles_total');
  const peak = peakRssMiB(operator.process.pid);
  await operator.process.stop();
  operators.pop();

  const restarted = await startOperator(kubeconfig, 'bench-restart', logs, [], RUN);
  operators.push(restarted);
  const restartedAt = Date.now();
  await waitFor(
    'restarted operator reconciled everything',
    async () => (await restarted.counter('aimesh_operator_reconciles_total')) >= COUNT,
    1_800_000,
  );
  const resyncMs = Date.now() - restartedAt;
  const restartWrites = await writes(restarted);
  const restartPeak = peakRssMiB(restarted.process.pid);

  // A child edited by hand (a field the operator owns changed to another value): how long
  // until the operator puts it back.
  const edited = `svc-${Math.floor(COUNT / 2)}`;
  const patched = await cluster.kubectl([
    'patch',
    'service',
    edited,
    '-n',
    NAMESPACE,
    '--type=merge',
    '-p',
    '{"spec":{"selector":{"aimesh.io/service":"edited-by-hand"}}}',
  ]);
  if (patched.code !== 0) throw new Error(patched.stderr);
  const editedAt = Date.now();
  await waitFor(
    'hand edit undone',
    async () => {
      const got = await cluster.kubectl([
        'get',
        'service',
        edited,
        '-n',
        NAMESPACE,
        '-o',
        'jsonpath={.spec.selector.aimesh\\.io/service}',
      ]);
      return got.stdout.trim() === edited;
    },
    120_000,
  );
  const restoreMs = Date.now() - editedAt;

  const rows: (string | number)[][] = [
    ['AiServices', COUNT],
    ['children created (9 per AiService)', children],
    ['time until every AiService reports its generation observed', `${(convergeMs / 1000).toFixed(1)} s`],
    ['API writes until quiet (apply, delete, status, events; Lease excluded)', firstWrites],
    ['reconciles', reconciles],
    ['operator peak RSS (first start)', `${peak} MiB`],
    ['time to re-check all after a restart', `${(resyncMs / 1000).toFixed(1)} s`],
    ['API writes after a restart with nothing changed', restartWrites],
    ['operator peak RSS (restart)', `${restartPeak} MiB`],
    ['time to undo a Service edited by hand', `${(restoreMs / 1000).toFixed(2)} s`],
  ];
  writeSection(
    'operator-converge',
    `Operator: converge ${COUNT} AiServices`,
    'npm run bench:operator',
    `${table(['figure', 'value'], rows)}\n\nReal etcd + kube-apiserver + kube-controller-manager from test/env on the same machine (no kubelet, so pods stay Pending); one operator with 2 workers, running as the Helm chart's ServiceAccount, from the built JavaScript with the chart's V8 flags (\`${NODE_ARGS.join(' ')}\`).\n`,
  );
  console.log(table(['figure', 'value'], rows));
} finally {
  for (const op of operators) await op.process.stop();
  await cluster.stop();
}
