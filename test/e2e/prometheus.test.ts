import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import type { SagaSpec, SidecarConfigInput } from '../../api/index.js';
import { ConsulClient, ConsulRegistration } from '../../sidecar/discovery/index.js';
import { REPO_DIR } from '../env/components.js';
import {
  attachControlPlane,
  freePort,
  kubeVersionFlag,
  requireBinary,
  runHelm,
  startProcess,
  waitFor,
  type ManagedProcess,
} from '../env/index.js';
import { runCommand } from '../env/processes.js';
import {
  OPERATOR_NAMESPACE,
  installOperatorIdentity,
  startOperator,
  type OperatorProcess,
} from './operator-process.js';
import { kubectl, sharedEnvironment } from './shared.js';
import { startSidecar, type SidecarProcess } from './sidecar-process.js';
import { registerTestService, startStepService, type StepService } from './step-services.js';

/**
 * The chart's alert rules and Grafana dashboard against a real Prometheus (Debian's
 * package, from test/env) scraping a real operator and a real sidecar under load: every
 * panel query and every alert's measured side returns data, every alert that must stay
 * quiet does, and the breaker alert fires. Prometheus is configured as the Prometheus
 * Operator would configure it from the chart's ServiceMonitor and PodMonitor: the same
 * target labels (job, namespace, pod, endpoint...) and the same honor_labels, so label
 * clashes between our metrics and the target's show up here as they would in a cluster.
 */
const NS = 'prometheus-e2e';
const POD = 'gateway-7d9f-abcde';
const SIDECAR_NAME = 'gateway';
/** Grafana's $__rate_interval: one window covering the whole test, so every counter has a rate. */
const RATE_INTERVAL = '5m';
/** The breaker alert waits 5 minutes in the chart; the test's copy of the rules waits this long. */
const SHORT_FOR = '2s';

/**
 * Full alert expressions expected to return nothing while the test runs, and why. Each
 * is also checked to stay empty, so a reason that stops being true fails the test.
 */
const QUIET_ALERTS: Record<string, string> = {
  AimeshOperatorNoLeader: 'the test operator holds the lease',
  AimeshOperatorSeveralLeaders: 'one operator runs',
  AimeshReconcileErrors: 'the AiService reconciles without errors',
  AimeshWorkQueueBacklog: 'one AiService, no backlog',
  AimeshSidecarInjectionMissed: 'no admission webhook runs here, so no miss is counted',
  AimeshDiscoveryStale: 'Consul answers',
  AimeshRetryBudgetExhausted: 'denials stay under 1/s averaged over 5 minutes',
  AimeshSidecarScrapeMissing: 'the sidecar answers /metrics',
  AimeshSagaExecutionsStuck: 'no execution waits 5 minutes',
  AimeshAiProviderFailingOver: 'failovers stay under 0.5/s averaged over 5 minutes',
};

/** Measured sides (the expression before its threshold) expected empty, and why. */
const ABSENT_SERIES: Record<string, string> = {
  AimeshSidecarInjectionMissed:
    'aimesh_operator_pods_without_sidecar is set by the miss detector, which runs with the admission webhook (test/e2e/injection.test.ts)',
};

/** Dashboard queries expected to return nothing, and why. */
const EMPTY_PANELS: Record<string, string> = {
  'Compensations/C':
    'aimesh_saga_recovered_total counts takeovers after a crash; no orchestrator restarts here',
};

interface Rule {
  alert: string;
  expr: string;
  for?: string;
}
interface Chart {
  groups: { name: string; rules: Rule[] }[];
  dashboard: Dashboard;
  serviceMonitor: Monitor;
  podMonitor: Monitor;
  serviceName: string;
}
interface Monitor {
  metadata: { name: string; namespace: string };
  spec: {
    endpoints?: { port: string; path: string; honorLabels?: boolean }[];
    podMetricsEndpoints?: { port: string; path: string; honorLabels?: boolean }[];
  };
}
interface Dashboard {
  panels: { title: string; targets?: { refId: string; expr: string }[] }[];
  templating: { list: { name: string; definition?: string }[] };
}

const dir = mkdtempSync(join(tmpdir(), 'aimesh-prometheus-'));
const consulAddress = sharedEnvironment().consul.address;
const consul = new ConsulClient(consulAddress);
let chart: Chart;
let operator: OperatorProcess | undefined;
let sidecar: SidecarProcess | undefined;
let prometheus: ManagedProcess | undefined;
let prometheusUrl = '';
const servers: Server[] = [];
const registrations: ConsulRegistration[] = [];
let steps: StepService | undefined;

/** The chart rendered with every observability option on, as a user would install it. */
async function renderChart(): Promise<Chart> {
  const rendered = await runHelm([
    'template',
    'aimesh',
    join(REPO_DIR, 'charts', 'aimesh-operator'),
    '--namespace',
    OPERATOR_NAMESPACE,
    kubeVersionFlag(),
    ...['metrics.serviceMonitor', 'metrics.podMonitor', 'prometheusRule', 'dashboards'].flatMap((v) => [
      '--set',
      `${v}.enabled=true`,
    ]),
  ]);
  if (rendered.code !== 0) throw new Error(`helm template: ${rendered.stderr}`);
  const objects = parseAllDocuments(rendered.stdout)
    .map((d) => d.toJS() as { kind?: string; metadata: { name: string }; spec: unknown; data: unknown })
    .filter((o) => o?.kind);
  const one = (kind: string) => {
    const found = objects.filter((o) => o.kind === kind);
    if (found.length !== 1) throw new Error(`the chart renders ${found.length} ${kind}s`);
    return found[0] as (typeof objects)[number];
  };
  const configMap = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name.endsWith('-dashboards'));
  if (!configMap) throw new Error('the chart renders no dashboard ConfigMap');
  const service = objects.find((o) => o.kind === 'Service' && o.metadata.name.endsWith('-metrics'));
  if (!service) throw new Error('the chart renders no metrics Service');
  return {
    groups: (one('PrometheusRule').spec as { groups: Chart['groups'] }).groups,
    dashboard: JSON.parse(Object.values(configMap.data as Record<string, string>)[0] as string) as Dashboard,
    serviceMonitor: one('ServiceMonitor') as unknown as Monitor,
    podMonitor: one('PodMonitor') as unknown as Monitor,
    serviceName: service.metadata.name,
  };
}

/** A real HTTP service in Consul whose answers the test chooses per request. */
async function startService(name: string, answer: (hit: number) => number): Promise<void> {
  let hits = 0;
  const server = createServer((req, res) => {
    if (req.url === '/healthz') return res.end('ok');
    res.writeHead(answer(++hits), { 'content-type': 'application/json' });
    res.end('{}');
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  registrations.push(await registerTestService(consul, name, port));
}

/** An OpenAI-compatible channel: failing ones answer 503, the others an answer with usage. */
async function startProvider(failing: boolean): Promise<string> {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(failing ? 503 : 200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify(
          failing
            ? { error: { message: 'overloaded' } }
            : { choices: [{ message: { role: 'assistant', content: 'hi' } }], usage: { total_tokens: 12 } },
        ),
      );
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
}

/**
 * One saga whose inputs pick each outcome: `b: ok` completes; `b: fail` rolls back, and
 * `undo: fail` makes the rollback itself fail (400 is not retried), so the execution
 * stops as compensation-failed.
 */
const SAGA: SagaSpec = {
  orchestrator: SIDECAR_NAME,
  timeout: '30s',
  concurrencyLimit: 10,
  steps: [
    {
      name: 'reserve',
      action: { service: 'obs-steps', method: 'POST', path: '/do/a', headers: {}, timeout: '5s' },
      compensation: {
        service: 'obs-steps',
        method: 'POST',
        path: '/undo/{{ input.undo }}',
        headers: {},
        timeout: '5s',
      },
      retry: { maxAttempts: 1, backoff: { initial: '10ms', multiplier: 2, max: '10ms' }, retryOn: ['5xx'] },
      pivot: false,
    },
    {
      name: 'charge',
      action: { service: 'obs-steps', method: 'POST', path: '/do/{{ input.b }}', headers: {}, timeout: '5s' },
      retry: { maxAttempts: 1, backoff: { initial: '10ms', multiplier: 2, max: '10ms' }, retryOn: ['5xx'] },
      pivot: false,
    },
  ],
} as SagaSpec;

function sidecarConfig(providers: { primary: string; backup: string }): Omit<SidecarConfigInput, 'listen'> {
  return {
    service: { name: SIDECAR_NAME, namespace: NS, port: 1 },
    discovery: { mode: 'consul', consul: { register: false } },
    upstreams: [
      // Always 500: its breaker opens and stays open, the outlier detector ejects it, the fallback answers.
      {
        name: 'obs-flaky',
        circuitBreaker: { consecutiveFailures: 2, openFor: '10m', halfOpenRequests: 1 },
        outlierDetection: {
          consecutive5xx: 2,
          interval: '1s',
          baseEjectionTime: '10m',
          maxEjectionPercent: 100,
        },
        retries: { attempts: 0 },
        fallback: { response: { status: 200, body: 'fallback' } },
      },
      // Every other call fails: a few retries are made, and the budget (10% of calls) refuses the rest.
      { name: 'obs-retry', retries: { attempts: 2, budget: { percent: 10, minPerSecond: 0 } } },
      // Nothing registers it: an upstream without endpoints.
      { name: 'obs-nobody' },
      { name: 'obs-steps', timeout: '10s' },
    ],
    providers: [
      { name: 'primary', baseUrl: providers.primary, priority: 100, models: [] },
      { name: 'backup', baseUrl: providers.backup, priority: 10, models: [] },
    ],
    aiRouting: { cooldown: '0s', cache: { ttl: '300s', maxEntries: 100 } },
    sagas: [{ name: 'obs-order', spec: SAGA }],
    sagaStore: { kind: 'file', path: join(dir, 'sagas') },
  } as Omit<SidecarConfigInput, 'listen'>;
}

/** Traffic through the sidecar that touches every metric the dashboard shows. */
async function load(side: SidecarProcess): Promise<void> {
  for (let i = 0; i < 20; i++) {
    await (await fetch(`${side.outbound}/v1/invoke/obs-flaky/x`)).text();
    await (await fetch(`${side.outbound}/v1/invoke/obs-retry/x`)).text();
    await (await fetch(`${side.outbound}/v1/invoke/obs-nobody/x`)).text();
  }
  for (let i = 0; i < 3; i++) {
    const response = await fetch(`${side.outbound}/v1/ai/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'same question' }] }),
    });
    await response.text();
  }
  const outcomes = [
    { undo: 'ok', b: 'ok', state: 'completed' },
    { undo: 'ok', b: 'fail', state: 'compensated' },
    { undo: 'fail', b: 'fail', state: 'compensation-failed' },
  ];
  for (const [i, { state, ...input }] of outcomes.entries()) {
    const started = await fetch(`${side.control}/v1/sagas/obs-order/executions`, {
      method: 'POST',
      headers: { ...side.controlAuth, 'content-type': 'application/json' },
      body: JSON.stringify({ input, idempotencyKey: `obs-${i}` }),
    });
    const { id } = (await started.json()) as { id: string };
    const done = (await (
      await fetch(`${side.control}/v1/executions/${id}?wait=30s`, { headers: side.controlAuth })
    ).json()) as {
      state: string;
    };
    expect(done.state).toBe(state);
  }
}

/** Scrape jobs as the Prometheus Operator generates them from the chart's monitors. */
function prometheusConfig(operatorPort: number, sidecarAdmin: string, rulesFile: string): string {
  const service = chart.serviceMonitor;
  const pods = chart.podMonitor;
  const serviceEndpoint = service.spec.endpoints?.[0];
  const podEndpoint = pods.spec.podMetricsEndpoints?.[0];
  if (!serviceEndpoint || !podEndpoint) throw new Error('the monitors have no endpoints');
  return stringify({
    global: { scrape_interval: '1s', evaluation_interval: '1s' },
    rule_files: [rulesFile],
    scrape_configs: [
      {
        job_name: `serviceMonitor/${service.metadata.namespace}/${service.metadata.name}/0`,
        honor_labels: serviceEndpoint.honorLabels ?? false,
        metrics_path: serviceEndpoint.path,
        static_configs: [
          {
            targets: [`127.0.0.1:${operatorPort}`],
            labels: {
              // A ServiceMonitor's job is the Service's name; the rest are the target's labels.
              job: chart.serviceName,
              namespace: OPERATOR_NAMESPACE,
              service: chart.serviceName,
              endpoint: serviceEndpoint.port,
              pod: 'aimesh-operator-5c6b7-xk2lp',
              container: 'operator',
            },
          },
        ],
      },
      {
        job_name: `podMonitor/${pods.metadata.namespace}/${pods.metadata.name}/0`,
        honor_labels: podEndpoint.honorLabels ?? false,
        metrics_path: podEndpoint.path,
        static_configs: [
          {
            targets: [new URL(sidecarAdmin).host],
            labels: {
              // A PodMonitor's job is "<its namespace>/<its name>".
              job: `${pods.metadata.namespace}/${pods.metadata.name}`,
              namespace: NS,
              pod: POD,
              endpoint: podEndpoint.port,
              container: 'aimesh-sidecar',
            },
          },
        ],
      },
    ],
  });
}

async function query(expr: string): Promise<unknown[]> {
  const response = await fetch(`${prometheusUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = (await response.json()) as { status: string; error?: string; data: { result: unknown[] } };
  if (body.status !== 'success') throw new Error(`${expr}: ${body.error}`);
  return body.data.result;
}

/**
 * A query that should return data, asked again for a few scrape intervals while it is empty:
 * on a loaded machine a rate over the last scrapes can lag the load by a scrape or two.
 */
async function queryExpectingData(expr: string): Promise<unknown[]> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const result = await query(expr);
    if (result.length > 0 || Date.now() > deadline) return result;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

/** Grafana's variables, as the dashboard would send them for the test's namespace. */
function concrete(expr: string): string {
  return expr.replaceAll('$__rate_interval', RATE_INTERVAL).replaceAll('$namespace', NS);
}

/** The measured side of an alert: its expression without the final comparison to a number. */
function measured(expr: string): string {
  const match = /^(.*?)\s*(==|!=|>=|<=|>|<)\s*-?[\d.]+\s*$/s.exec(expr);
  if (!match?.[1]) throw new Error(`alert expression without a threshold: ${expr}`);
  return match[1];
}

function rules(): Rule[] {
  return chart.groups.flatMap((g) => g.rules);
}

beforeAll(async () => {
  chart = await renderChart();
  const cluster = attachControlPlane(sharedEnvironment().controlPlane);
  const created = await kubectl(['create', 'namespace', NS]);
  if (created.code !== 0) throw new Error(created.stderr);
  const identity = await installOperatorIdentity(cluster);
  operator = await startOperator(identity, 'prometheus-e2e', join(dir, 'logs'));
  // Another suite's operator may hold the shared Lease for a moment.
  await waitFor('the test operator leads', () => (operator as OperatorProcess).isLeader(), 120_000);
  const applied = await kubectl(
    ['apply', '--server-side', '-f', '-'],
    `apiVersion: aimesh.io/v1alpha1
kind: AiService
metadata: {name: ${SIDECAR_NAME}, namespace: ${NS}}
spec:
  image: registry.example.com/shop/gateway:1.0.0
  upstreams: [{name: obs-steps}]
`,
  );
  if (applied.code !== 0) throw new Error(applied.stderr);

  await startService('obs-flaky', () => 500);
  await startService('obs-retry', (hit) => (hit % 2 === 1 ? 500 : 200));
  steps = await startStepService('obs-steps', consul);
  steps.behaviour.failures = [{ path: /^\/(do|undo)\/fail/, status: 400, times: Number.MAX_SAFE_INTEGER }];
  sidecar = await startSidecar(
    SIDECAR_NAME,
    sidecarConfig({ primary: await startProvider(true), backup: await startProvider(false) }),
    consulAddress,
  );
  await waitFor('the sidecar sees every registered upstream', async () => {
    const dump = (await (await fetch(`${(sidecar as SidecarProcess).admin}/admin/endpoints`)).json()) as {
      upstream: string;
      endpoints: unknown[];
    }[];
    const registered = dump.filter((u) => ['obs-flaky', 'obs-retry', 'obs-steps'].includes(u.upstream));
    return registered.length === 3 && registered.every((u) => u.endpoints.length === 1);
  });

  // The test's copy of the rules: the breaker alert waits seconds, not minutes.
  const rulesFile = join(dir, 'rules.yaml');
  writeFileSync(
    rulesFile,
    stringify({
      groups: chart.groups.map((g) => ({
        ...g,
        rules: g.rules.map((r) => (r.alert === 'AimeshCircuitBreakerOpen' ? { ...r, for: SHORT_FOR } : r)),
      })),
    }),
  );
  const port = await freePort();
  const configFile = join(dir, 'prometheus.yml');
  writeFileSync(configFile, prometheusConfig(operator.probePort, sidecar.admin, rulesFile));
  prometheus = startProcess(
    'prometheus',
    requireBinary('prometheus'),
    [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    join(dir, 'logs'),
  );
  prometheusUrl = `http://127.0.0.1:${port}`;
  await waitFor('prometheus ready', async () => (await fetch(`${prometheusUrl}/-/ready`)).ok);
  // Prometheus scrapes before the load starts, as in a cluster: counters are seen at 0
  // first, and then seen to increase.
  const scrapedAtLeast = (times: number) => async () => {
    const result = (await query('count_over_time(up[5m])')) as { value: [number, string] }[];
    return result.length === 2 && result.every((r) => Number(r.value[1]) >= times);
  };
  await waitFor('both targets scraped', scrapedAtLeast(2));
  await load(sidecar);
  const scrapes = (await query('count_over_time(up[5m])')) as { value: [number, string] }[];
  const after = Math.max(...scrapes.map((r) => Number(r.value[1]))) + 3;
  await waitFor('a few scrapes after the load', scrapedAtLeast(after));
});

afterAll(async () => {
  await prometheus?.stop();
  await sidecar?.stop();
  await operator?.process.stop();
  await steps?.stop();
  for (const registration of registrations) await registration.deregister().catch(() => undefined);
  for (const server of servers) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
  await kubectl(['delete', 'namespace', NS, '--wait=false']);
  if (!process.env.AIMESH_KEEP_TESTENV) rmSync(dir, { recursive: true, force: true });
});

describe('the chart’s alerts and dashboard against a real Prometheus', () => {
  it('promtool accepts the chart’s rules and the test’s copy', async () => {
    const original = join(dir, 'chart-rules.yaml');
    writeFileSync(original, stringify({ groups: chart.groups }));
    for (const file of [original, join(dir, 'rules.yaml')]) {
      const checked = await runCommand(requireBinary('promtool'), ['check', 'rules', file]);
      expect({ file, code: checked.code, out: checked.stdout + checked.stderr }).toMatchObject({ code: 0 });
      expect(checked.stdout).toContain('SUCCESS');
    }
  });

  it('every dashboard query returns data, except the ones listed with a reason', async () => {
    const results: Record<string, string> = {};
    for (const panel of chart.dashboard.panels) {
      for (const target of panel.targets ?? []) {
        const key = `${panel.title}/${target.refId}`;
        const expr = concrete(target.expr);
        const found = (await (EMPTY_PANELS[key] ? query(expr) : queryExpectingData(expr))).length;
        results[key] = found > 0 ? 'data' : EMPTY_PANELS[key] ? 'expected empty' : `EMPTY: ${target.expr}`;
      }
    }
    expect(Object.keys(results).length).toBeGreaterThan(20);
    expect(Object.entries(results).filter(([, r]) => r.startsWith('EMPTY'))).toEqual([]);
    expect(Object.keys(EMPTY_PANELS).filter((k) => results[k] !== 'expected empty')).toEqual([]);
  });

  it('series keep the labels our code gives them where they clash with the target’s', async () => {
    const open = (await query('aimesh_sidecar_breaker_state == 2')) as { metric: Record<string, string> }[];
    expect(open.map((s) => s.metric)).toEqual([
      expect.objectContaining({ upstream: 'obs-flaky', endpoint: 'obs-flaky-1', namespace: NS, pod: POD }),
    ]);
    expect(await query('{exported_endpoint!=""} or {exported_namespace!=""}')).toEqual([]);
  });

  it('the namespace variable lists the sidecar’s namespace', async () => {
    const variable = chart.dashboard.templating.list.find((v) => v.name === 'namespace');
    const match = /^label_values\((\w+), (\w+)\)$/.exec(variable?.definition ?? '');
    expect(match).not.toBeNull();
    const [, metric, label] = match as unknown as [string, string, string];
    const response = await fetch(`${prometheusUrl}/api/v1/label/${label}/values?match[]=${metric}`);
    expect(((await response.json()) as { data: string[] }).data).toEqual([NS]);
  });

  it('every alert measures series that exist, and fires only where the test made trouble', async () => {
    const measuredResults: Record<string, string> = {};
    const fullResults: Record<string, string> = {};
    for (const rule of rules()) {
      const measuredExpr = measured(rule.expr);
      const measuredFound =
        (await (ABSENT_SERIES[rule.alert] ? query(measuredExpr) : queryExpectingData(measuredExpr))).length >
        0;
      measuredResults[rule.alert] = measuredFound
        ? 'data'
        : ABSENT_SERIES[rule.alert]
          ? 'expected empty'
          : 'EMPTY';
      const firing =
        (await (QUIET_ALERTS[rule.alert] ? query(rule.expr) : queryExpectingData(rule.expr))).length > 0;
      fullResults[rule.alert] = firing ? 'true' : QUIET_ALERTS[rule.alert] ? 'quiet as expected' : 'EMPTY';
    }
    expect(Object.entries(measuredResults).filter(([, r]) => r === 'EMPTY')).toEqual([]);
    expect(Object.entries(fullResults).filter(([, r]) => r === 'EMPTY')).toEqual([]);
    // Every listed reason still holds: those stay quiet, or absent.
    expect(Object.keys(QUIET_ALERTS).filter((a) => fullResults[a] !== 'quiet as expected')).toEqual([]);
    expect(Object.keys(ABSENT_SERIES).filter((a) => measuredResults[a] !== 'expected empty')).toEqual([]);
  });

  it('the breaker alert goes firing for the open upstream, and the compensation alert fires at once', async () => {
    type Alert = { labels: Record<string, string>; state: string };
    let alerts: Alert[] = [];
    await waitFor('AimeshCircuitBreakerOpen firing', async () => {
      alerts = (
        (await (await fetch(`${prometheusUrl}/api/v1/alerts`)).json()) as { data: { alerts: Alert[] } }
      ).data.alerts;
      return alerts.some((a) => a.labels.alertname === 'AimeshCircuitBreakerOpen' && a.state === 'firing');
    });
    expect(alerts.find((a) => a.labels.alertname === 'AimeshCircuitBreakerOpen')?.labels).toMatchObject({
      namespace: NS,
      pod: POD,
      upstream: 'obs-flaky',
      severity: 'warning',
    });
    expect(alerts.find((a) => a.labels.alertname === 'AimeshSagaCompensationFailed')).toMatchObject({
      state: 'firing',
      labels: { namespace: NS, saga: 'obs-order', severity: 'critical' },
    });
  });
});
