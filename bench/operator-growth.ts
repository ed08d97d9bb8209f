/**
 * `npm run bench:operator-growth`: how the operator's time, writes and memory grow with the
 * number of AiServices. Each size runs on a fresh control plane, with the operator as the
 * chart runs it; nothing may grow faster than linearly.
 *
 * AIMESH_BENCH_GROWTH_SIZES sets the sizes (100,500,1000,2000).
 */
import { join } from 'node:path';
import { startControlPlane } from '../test/env/index.js';
import { installOperatorIdentity } from '../test/e2e/operator-process.js';
import {
  applyAiServices,
  chartNodeArgs,
  chartWorkers,
  describeWrites,
  measureConvergence,
  memoryPeaks,
  mib,
  readSamples,
  startSampledOperator,
} from './operator-run.js';
import { table, writeSection } from './report.js';

const SIZES = (process.env.AIMESH_BENCH_GROWTH_SIZES ?? '100,500,1000,2000')
  .split(',')
  .map((s) => Number(s.trim()))
  .filter((n) => Number.isInteger(n) && n > 0);
const NODE_ARGS = chartNodeArgs();
const NAMESPACE = 'bench';

interface Figures {
  count: number;
  convergeMs: number;
  writes: number;
  byKind: string;
  reconciles: number;
  peakRss: number;
  peakHeapUsed: number;
  /** CPU by process while converging: what the time was spent on. */
  cpu: string;
  /** The operator's own CPU time while converging. */
  operatorCpuMs: number;
}

async function measure(count: number): Promise<Figures> {
  const cluster = await startControlPlane();
  try {
    const kubeconfig = await installOperatorIdentity(cluster);
    const logs = join(cluster.dir, 'logs');
    await applyAiServices(cluster, NAMESPACE, count);
    const { operator, samplesFile } = await startSampledOperator(
      kubeconfig,
      `growth-${count}`,
      logs,
      NODE_ARGS,
    );
    try {
      const converging = await measureConvergence(cluster, operator, NAMESPACE, count, 3_600_000);
      const figures = {
        count,
        convergeMs: converging.convergeMs,
        writes: converging.writes.total,
        byKind: describeWrites(converging.writes.byKind),
        reconciles: converging.reconciles,
        peakRss: converging.peakRss,
        peakHeapUsed: mib(memoryPeaks(readSamples(samplesFile)).heapUsedMax),
        cpu: converging.cpu,
        operatorCpuMs: converging.operatorCpuMs,
      };
      console.log(JSON.stringify(figures));
      return figures;
    } finally {
      await operator.process.stop();
    }
  } finally {
    await cluster.stop();
  }
}

/**
 * What each step up in size costs per added AiService; growth is at most linear when the
 * last step's cost per AiService is no more than 1.25 × the first step's (room for noise).
 */
function growth(results: Figures[], pick: (f: Figures) => number, unit: string): string {
  if (results.length < 2) return 'one size only: no growth to judge';
  const steps = results.slice(1).map((f, i) => {
    const before = results[i] as Figures;
    return (pick(f) - pick(before)) / (f.count - before.count);
  });
  const first = steps[0] as number;
  const last = steps[steps.length - 1] as number;
  const ratio = first > 0 ? last / first : last <= 0 ? 1 : Infinity;
  const verdict = ratio <= 1.25 ? 'at most linear' : 'faster than linear';
  return `${steps.map((s) => s.toFixed(3)).join(' → ')} ${unit} per added AiService; last step / first = ${ratio.toFixed(2)}: ${verdict}`;
}

/** The section as far as it goes: written after every size, so a long run keeps what it measured. */
function report(results: Figures[]): string {
  const rows = results.map((f) => [
    f.count,
    `${(f.convergeMs / 1000).toFixed(1)} s`,
    f.writes,
    (f.writes / f.count).toFixed(2),
    f.reconciles,
    `${f.peakRss} MiB`,
    `${f.peakHeapUsed} MiB`,
  ]);
  const missing = SIZES.filter((n) => !results.some((f) => f.count === n));
  const body = [
    table(
      [
        'AiServices',
        'converge (every generation observed)',
        'API writes until quiet',
        'writes per AiService',
        'reconciles',
        'peak RSS',
        'peak heap used',
      ],
      rows,
    ),
    '',
    `- peak RSS: ${growth(results, (f) => f.peakRss, 'MiB')}`,
    `- peak heap used: ${growth(results, (f) => f.peakHeapUsed, 'MiB')}`,
    `- converge time: ${growth(results, (f) => f.convergeMs / 1000, 's')} (wall clock on a shared machine: read with the load average above)`,
    `- operator CPU while converging: ${growth(results, (f) => f.operatorCpuMs / 1000, 's')} (the operator's own work, apart from the control plane it shares the cores with)`,
    `- writes: ${growth(results, (f) => f.writes, 'writes')}`,
    `- writes by verb and kind at ${results.at(-1)?.count ?? 0}: ${results.at(-1)?.byKind ?? ''}`,
    ...results.map((f) => `- CPU while converging ${f.count}: ${f.cpu}`),
    ...(missing.length > 0 ? [`- not measured in this run: ${missing.join(', ')}`] : []),
    '',
    `Each size on a fresh control plane (etcd + kube-apiserver + kube-controller-manager from test/env, no kubelet); one operator with ${chartWorkers()} workers (the chart's operator.workers) as the Helm chart's ServiceAccount, from the bundle the image runs (image/bundle.ts) with the chart's V8 flags (\`${NODE_ARGS.join(' ')}\`). Heap used is the highest of samples taken every 250 ms inside the operator, garbage included.`,
  ].join('\n');
  writeSection(
    'operator-growth',
    `Operator: growth with the number of AiServices (${SIZES.join(', ')})`,
    'npm run bench:operator-growth',
    `${body}\n`,
  );
  return body;
}

const results: Figures[] = [];
for (const count of SIZES) {
  results.push(await measure(count));
  const body = report(results);
  if (results.length === SIZES.length) console.log(body);
}
