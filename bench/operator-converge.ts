/**
 * `npm run bench:operator`: how long the operator takes to converge N AiServices on a real
 * control plane, how many API writes it makes (by verb and kind), and its peak memory and
 * where that memory is; then how many writes a restart makes when nothing changed (the
 * answer should be none), and how soon it undoes a child edited by hand.
 *
 * AIMESH_BENCH_AISERVICES sets N (1000); AIMESH_BENCH_NODE_ARGS adds V8 flags to the
 * chart's (e.g. `--heap-prof` to see where the heap goes).
 */
import { join } from 'node:path';
import { startControlPlane, waitFor } from '../test/env/index.js';
import { installOperatorIdentity, type OperatorProcess } from '../test/e2e/operator-process.js';
import {
  CHILDREN_PER_SERVICE,
  applyAiServices,
  chartNodeArgs,
  chartWorkers,
  describeSample,
  describeWrites,
  measureConvergence,
  memoryPeaks,
  mib,
  peakRssMiB,
  readSamples,
  startSampledOperator,
  waitQuiet,
  writesOf,
} from './operator-run.js';
import { table, writeSection } from './report.js';

const COUNT = Number(process.env.AIMESH_BENCH_AISERVICES ?? 1000);
const NODE_ARGS = chartNodeArgs();
const EXTRA_ARGS = (process.env.AIMESH_BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
const NAMESPACE = 'bench';

const cluster = await startControlPlane();
const operators: OperatorProcess[] = [];
try {
  const kubeconfig = await installOperatorIdentity(cluster);
  const logs = join(cluster.dir, 'logs');
  await applyAiServices(cluster, NAMESPACE, COUNT);

  const first = await startSampledOperator(kubeconfig, 'bench', logs, [...NODE_ARGS, ...EXTRA_ARGS]);
  const operator = first.operator;
  operators.push(operator);
  const converging = await measureConvergence(cluster, operator, NAMESPACE, COUNT, 1_800_000);
  await operator.process.stop();
  operators.pop();
  const firstMemory = memoryPeaks(readSamples(first.samplesFile));

  const second = await startSampledOperator(kubeconfig, 'bench-restart', logs, [...NODE_ARGS, ...EXTRA_ARGS]);
  const restarted = second.operator;
  operators.push(restarted);
  const restartedAt = Date.now();
  await waitFor(
    'restarted operator reconciled everything',
    async () => (await restarted.counter('aimesh_operator_reconciles_total')) >= COUNT,
    1_800_000,
  );
  const resyncMs = Date.now() - restartedAt;
  await waitQuiet(restarted);
  const restartWrites = await writesOf(restarted);
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
  const restartMemory = memoryPeaks(readSamples(second.samplesFile));

  const rows: (string | number)[][] = [
    ['AiServices', COUNT],
    [`children created (${CHILDREN_PER_SERVICE} per AiService)`, converging.children],
    [
      'time until every AiService reports its generation observed',
      `${(converging.convergeMs / 1000).toFixed(1)} s`,
    ],
    ['  CPU spent meanwhile, by process', converging.cpu],
    ['API writes until quiet (Lease excluded)', converging.writes.total],
    ['  by verb and kind', describeWrites(converging.writes.byKind)],
    ['reconciles', converging.reconciles],
    ['operator peak RSS (first start)', `${converging.peakRss} MiB`],
    ['operator peak heap used (first start)', `${mib(firstMemory.heapUsedMax)} MiB`],
    ['time to re-check all after a restart', `${(resyncMs / 1000).toFixed(1)} s`],
    ['API writes after a restart with nothing changed', restartWrites.total],
    ['  by verb and kind', describeWrites(restartWrites.byKind)],
    ['operator peak RSS (restart)', `${restartPeak} MiB`],
    ['operator peak heap used (restart)', `${mib(restartMemory.heapUsedMax)} MiB`],
    ['time to undo a Service edited by hand', `${(restoreMs / 1000).toFixed(2)} s`],
  ];
  const breakdown = [firstMemory.atPeak, restartMemory.atPeak]
    .map((s, i) =>
      s ? `- ${i === 0 ? 'first start' : 'restart'}, at its highest sampled RSS: ${describeSample(s)}` : '',
    )
    .filter(Boolean)
    .join('\n');
  writeSection(
    'operator-converge',
    `Operator: converge ${COUNT} AiServices`,
    'npm run bench:operator',
    `${table(['figure', 'value'], rows)}\n\nWhere the memory is (sampled in the operator every 250 ms):\n\n${breakdown}\n\nReal etcd + kube-apiserver + kube-controller-manager from test/env on the same machine (no kubelet, so pods stay Pending); one operator with ${chartWorkers()} workers (the chart's operator.workers), running as the Helm chart's ServiceAccount, from the bundle the image runs (image/bundle.ts) with the chart's V8 flags (\`${NODE_ARGS.join(' ')}\`). With no kubelet no pod starts, so each Deployment reaches its 600 s progress deadline and its AiService turns Degraded: a run slower than that sees those status writes, after a restart too, and they are true changes.\n`,
  );
  console.log(table(['figure', 'value'], rows));
  console.log(breakdown);
} finally {
  for (const op of operators) await op.process.stop();
  await cluster.stop();
}
