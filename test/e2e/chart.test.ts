import { afterAll, describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import {
  INSTALL_MANIFEST,
  INSTALL_NAMESPACE,
  installManifest,
  installManifestHelmArgs,
} from '../../tools/install-manifest.js';
import { REPO_DIR } from '../env/components.js';
import { freePort, kubeVersionFlag, runHelm, serviceAccountKubeconfig, waitFor } from '../env/index.js';
import { startOperator, type OperatorProcess } from './operator-process.js';
import { kubectl, sharedEnvironment } from './shared.js';

const CHART = join(REPO_DIR, 'charts', 'aimesh-operator');
const NAMESPACE = 'aimesh-chart-e2e';
const SERVICE_ACCOUNT = `system:serviceaccount:${NAMESPACE}:aimesh-operator`;

type Manifest = {
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  subjects?: { name: string }[];
  data?: Record<string, string>;
  spec?: {
    replicas?: number;
    template?: { spec: { containers: { args: string[]; securityContext: Record<string, unknown> }[] } };
  };
};

async function template(...set: string[]): Promise<Manifest[]> {
  return templateRelease('aimesh', ...set);
}

async function templateRelease(release: string, ...set: string[]): Promise<Manifest[]> {
  return templateIn(NAMESPACE, release, ...set);
}

async function templateIn(namespace: string, release: string, ...set: string[]): Promise<Manifest[]> {
  const rendered = await runHelm([
    'template',
    release,
    CHART,
    '--namespace',
    namespace,
    kubeVersionFlag(),
    ...set.flatMap((s) => ['--set', s]),
  ]);
  expect(rendered.stderr).toBe('');
  expect(rendered.code).toBe(0);
  return parseAllDocuments(rendered.stdout)
    .map((d) => d.toJS() as Manifest | null)
    .filter((m): m is Manifest => m !== null);
}

async function canI(
  verb: string,
  target: string,
  namespace = 'default',
  serviceAccount = SERVICE_ACCOUNT,
): Promise<boolean> {
  const [resource, subresource] = target.split('/') as [string, string | undefined];
  const result = await kubectl([
    'auth',
    'can-i',
    verb,
    resource,
    ...(subresource ? [`--subresource=${subresource}`] : []),
    '-n',
    namespace,
    `--as=${serviceAccount}`,
  ]);
  return result.stdout.trim() === 'yes';
}

describe('Helm chart charts/aimesh-operator', () => {
  it('passes helm lint --strict', async () => {
    const linted = await runHelm(['lint', '--strict', kubeVersionFlag(), CHART]);
    expect(linted.stdout).toContain('0 chart(s) failed');
    expect(linted.code).toBe(0);
  });

  it('renders a leader-elected operator Deployment that runs as non-root', async () => {
    const manifests = await template();
    expect(manifests.map((m) => m.kind).sort()).toEqual([
      'ClusterRole',
      'ClusterRoleBinding',
      'Deployment',
      'MutatingWebhookConfiguration',
      'PodDisruptionBudget',
      'Role',
      'RoleBinding',
      'Secret',
      'Service',
      'Service',
      'ServiceAccount',
      'ValidatingWebhookConfiguration',
    ]);
    const deployment = manifests.find((m) => m.kind === 'Deployment') as Manifest;
    expect(deployment.spec?.replicas).toBe(2);
    const container = deployment.spec?.template?.spec.containers[0];
    expect(container?.args).toEqual(
      expect.arrayContaining(['operator', '--leader-elect=true', `--lease-namespace=${NAMESPACE}`]),
    );
    expect(container?.securityContext).toMatchObject({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
    });
    const scoped = await template('operator.watchNamespace=team-a', 'replicaCount=1');
    const args = (scoped.find((m) => m.kind === 'Deployment') as Manifest).spec?.template?.spec.containers[0]
      ?.args;
    expect(args).toContain('--namespace=team-a');
    expect(scoped.map((m) => m.kind)).not.toContain('PodDisruptionBudget');
    // A Role where it watches; cluster-wide only what a Role cannot grant, each by name.
    const role = scoped.find((m) => m.kind === 'Role' && m.metadata.name === 'aimesh-operator');
    expect(role?.metadata.namespace).toBe('team-a');
    const clusterRole = scoped.find((m) => m.kind === 'ClusterRole') as Manifest & {
      rules: { resources: string[]; resourceNames?: string[] }[];
    };
    expect(clusterRole.rules.map((r) => [r.resources, r.resourceNames])).toEqual([
      [['namespaces'], ['team-a']],
      [['mutatingwebhookconfigurations', 'validatingwebhookconfigurations'], ['aimesh-operator']],
    ]);
  });

  it('installs on a real API server, and its RBAC is enough for the operator and no more', async () => {
    await kubectl(['create', 'namespace', NAMESPACE]);
    const manifests = await template();
    const applied = await kubectl(
      ['apply', '--server-side', '-f', '-'],
      JSON.stringify({ apiVersion: 'v1', kind: 'List', items: manifests }),
    );
    // No operator serves them here, and the validating one would refuse every AiService.
    await removeWebhookConfigurations();
    expect(applied.stderr).toBe('');
    expect(applied.code).toBe(0);

    for (const [verb, resource] of [
      ['watch', 'aiservices.aimesh.io'],
      ['patch', 'aiservices.aimesh.io/status'],
      ['patch', 'deployments.apps'],
      ['delete', 'virtualservices.networking.istio.io'],
      ['create', 'authorizationpolicies.security.istio.io'],
      ['create', 'events'],
    ] as const) {
      expect(`${verb} ${resource}: ${await canI(verb, resource)}`).toBe(`${verb} ${resource}: true`);
    }
    expect(await canI('update', 'leases.coordination.k8s.io', NAMESPACE)).toBe(true);
    for (const [verb, resource] of [
      ['get', 'secrets'],
      ['create', 'pods'],
      ['update', 'aiservices.aimesh.io'],
      ['delete', 'customresourcedefinitions.apiextensions.k8s.io'],
      ['update', 'leases.coordination.k8s.io'],
      ['escalate', 'clusterroles.rbac.authorization.k8s.io'],
    ] as const) {
      expect(`${verb} ${resource}: ${await canI(verb, resource)}`).toBe(`${verb} ${resource}: false`);
    }
  });

  it('names objects once: aimesh-operator, <release>-aimesh-operator, or the overrides', async () => {
    const names = async (release: string, ...set: string[]) => [
      ...new Set(
        (await templateRelease(release, ...set)).map((m) =>
          m.metadata.name.replace(/-(leader-election|metrics|webhook|webhook-tls)$/, ''),
        ),
      ),
    ];
    expect(await names('aimesh')).toEqual(['aimesh-operator']);
    expect(await names('aimesh-operator')).toEqual(['aimesh-operator']);
    expect(await names('prod')).toEqual(['prod-aimesh-operator']);
    expect(await names('prod', 'fullnameOverride=mesh-controller')).toEqual(['mesh-controller']);
    expect(await names('prod', 'nameOverride=mesh')).toEqual(['prod-mesh']);
    const overridden = await templateRelease('prod', 'nameOverride=mesh');
    const deployment = overridden.find((m) => m.kind === 'Deployment') as Manifest;
    expect(deployment.metadata.labels?.['app.kubernetes.io/name']).toBe('mesh');
  });

  it('refuses unknown and mistyped values instead of ignoring them', async () => {
    for (const [set, message] of [
      ['operator.watchNamespaces=team-a', 'watchNamespaces'],
      ['replicaCount=two', 'replicaCount'],
      ['metrics.serviceMonitor.enable=true', 'enable'],
    ] as const) {
      const rendered = await runHelm(['template', 'aimesh', CHART, kubeVersionFlag(), '--set', set]);
      expect(rendered.code).not.toBe(0);
      expect(rendered.stderr).toContain("values don't meet the specifications of the schema");
      expect(rendered.stderr).toContain(message);
    }
  });

  it('adds the ServiceMonitor, PodMonitor, PrometheusRule and dashboard only when asked', async () => {
    const kinds = (await template()).map((m) => m.kind);
    for (const kind of ['ServiceMonitor', 'PodMonitor', 'PrometheusRule', 'ConfigMap'])
      expect(kinds).not.toContain(kind);
    const monitored = await template(
      'metrics.serviceMonitor.enabled=true',
      'metrics.serviceMonitor.labels.release=kube-prometheus-stack',
      'metrics.podMonitor.enabled=true',
      'prometheusRule.enabled=true',
      'dashboards.enabled=true',
    );
    const byKind = (kind: string) =>
      monitored.find((m) => m.kind === kind) as Manifest & { spec: Record<string, unknown> };
    expect(byKind('ServiceMonitor').metadata.labels?.release).toBe('kube-prometheus-stack');
    expect(byKind('PodMonitor').spec).toMatchObject({
      selector: { matchExpressions: [{ key: 'aimesh.io/service', operator: 'Exists' }] },
      podMetricsEndpoints: [{ port: 'aimesh-admin', path: '/metrics' }],
    });
    const rules = byKind('PrometheusRule').spec as { groups: { rules: { alert: string; expr: string }[] }[] };
    const alerts = parse(readFileSync(join(CHART, 'files', 'alerts.yaml'), 'utf8')) as typeof rules;
    expect(rules).toEqual(alerts);
    expect(JSON.stringify(rules)).toContain('{{ $labels.saga }}');
    const dashboards = byKind('ConfigMap');
    expect(dashboards.metadata.labels?.grafana_dashboard).toBe('1');
    expect(JSON.parse(dashboards.data?.['aimesh.json'] as string)).toEqual(
      JSON.parse(readFileSync(join(CHART, 'dashboards', 'aimesh.json'), 'utf8')),
    );
  });
});

/**
 * operator.watchNamespace, installed by real helm: the operator (run as its own process with
 * the chart's ServiceAccount, since no kubelet runs here) becomes ready, fills in the
 * caBundles, validates and reconciles in its namespace, with a Role there and a ClusterRole
 * that names the only cluster-scoped objects it touches.
 */
describe('the chart with operator.watchNamespace, installed by helm', () => {
  const release = 'scoped';
  const fullname = `${release}-aimesh-operator`;
  const namespace = 'aimesh-chart-scoped';
  const watched = 'aimesh-chart-team-a';
  const other = 'aimesh-chart-team-b';
  const account = `system:serviceaccount:${namespace}:${fullname}`;
  const logs = mkdtempSync(join(tmpdir(), 'aimesh-chart-scoped-'));
  let operator: OperatorProcess | undefined;

  afterAll(async () => {
    const { kubeconfig } = sharedEnvironment().controlPlane;
    const uninstalled = await runHelm(['uninstall', release, '--namespace', namespace, '--wait'], kubeconfig);
    await operator?.process.stop();
    // Cluster-scoped objects go even if the uninstall did not (the control plane is shared).
    await kubectl([
      'delete',
      'clusterrole,clusterrolebinding,mutatingwebhookconfiguration,validatingwebhookconfiguration',
      '-l',
      `app.kubernetes.io/instance=${release}`,
      '--ignore-not-found',
    ]);
    await kubectl(['delete', 'namespace', namespace, watched, other, '--ignore-not-found', '--wait=false']);
    if (!process.env.AIMESH_KEEP_TESTENV) rmSync(logs, { recursive: true, force: true });
    expect(uninstalled.stderr).toBe('');
  });

  it('runs the operator in that namespace with a Role there and, cluster-wide, only its named objects', async () => {
    const shared = sharedEnvironment().controlPlane;
    for (const ns of [namespace, watched, other])
      expect((await kubectl(['create', 'namespace', ns])).code).toBe(0);
    const port = await freePort();
    const installed = await runHelm(
      [
        'install',
        release,
        CHART,
        '--namespace',
        namespace,
        // The shared control plane has the CRDs already.
        '--skip-crds',
        ...[
          `operator.watchNamespace=${watched}`,
          'replicaCount=1',
          `webhook.url=https://127.0.0.1:${port}`,
          'webhook.hosts={127.0.0.1}',
        ].flatMap((v) => ['--set', v]),
      ],
      shared.kubeconfig,
    );
    expect(installed.stderr).toBe('');
    expect(installed.code).toBe(0);

    operator = await startOperator(
      await serviceAccountKubeconfig(shared, namespace, fullname),
      'chart-scoped',
      logs,
      [
        `--namespace=${watched}`,
        `--webhook-address=127.0.0.1:${port}`,
        '--webhook-hosts=127.0.0.1',
        `--webhook-secret=${fullname}-webhook-tls`,
        `--webhook-configuration=${fullname}`,
        '--miss-scan-seconds=1',
      ],
      { leaseNamespace: namespace },
    );
    const probes = `http://127.0.0.1:${operator.probePort}`;
    await waitFor('the scoped operator ready, both caBundles filled in', async () => {
      if (!(await fetch(`${probes}/readyz`)).ok) return false;
      for (const kind of ['mutatingwebhookconfiguration', 'validatingwebhookconfiguration']) {
        const got = await kubectl(['get', kind, fullname, '-o', 'json']);
        const webhooks = (JSON.parse(got.stdout) as { webhooks: { clientConfig: { caBundle?: string } }[] })
          .webhooks;
        if (!webhooks.every((w) => w.clientConfig.caBundle)) return false;
      }
      return true;
    });

    // Through its validating webhook, then reconciled; the other namespace is not its own.
    for (const ns of [watched, other]) {
      const applied = await kubectl(
        ['apply', '--server-side', '-f', '-'],
        `apiVersion: aimesh.io/v1alpha1
kind: AiService
metadata: {name: scoped, namespace: ${ns}}
spec: {image: registry.example.com/scoped:1.0.0}
`,
      );
      expect(applied.stderr).toBe('');
    }
    await waitFor('the AiService in the watched namespace reconciled', async () => {
      const got = await kubectl(['get', 'aiservice', 'scoped', '-n', watched, '-o', 'json']);
      const status = (JSON.parse(got.stdout) as { status?: { conditions?: { type: string }[] } }).status;
      return (status?.conditions ?? []).some((c) => c.type === 'Ready');
    });
    const children = await kubectl(['get', 'deployment,service,configmap', '-n', watched, '-o', 'name']);
    expect(children.stdout).toContain('deployment.apps/scoped');
    expect((await kubectl(['get', 'deployment', 'scoped', '-n', other, '--ignore-not-found'])).stdout).toBe(
      '',
    );
    const log = readFileSync(join(logs, 'operator-chart-scoped.log'), 'utf8');
    expect(log).not.toMatch(/forbidden/i);
    expect(
      await operator.counter('aimesh_operator_reconciles_total', (l) => l.includes('result="error"')),
    ).toBe(0);

    const can = async (verb: string, target: string, ns?: string) => {
      const scope = ns === 'all' ? ['--all-namespaces'] : ns ? ['-n', ns] : [];
      const answer = await kubectl(['auth', 'can-i', verb, target, ...scope, `--as=${account}`]);
      return `${verb} ${target}${ns ? ` -n ${ns}` : ''}: ${answer.stdout.trim()}`;
    };
    for (const [verb, target, ns] of [
      ['patch', `mutatingwebhookconfigurations/${fullname}`],
      ['update', `validatingwebhookconfigurations/${fullname}`],
      ['get', `namespaces/${watched}`],
      ['patch', 'deployments.apps', watched],
      ['watch', 'aiservices.aimesh.io', watched],
      ['list', 'pods', watched],
      ['update', 'leases.coordination.k8s.io', namespace],
    ] as const)
      expect(await can(verb, target, ns)).toMatch(/: yes$/);
    for (const [verb, target, ns] of [
      ['patch', 'mutatingwebhookconfigurations'],
      ['patch', 'mutatingwebhookconfigurations/aimesh-operator'],
      ['list', 'namespaces'],
      ['get', `namespaces/${other}`],
      ['watch', 'aiservices.aimesh.io', 'all'],
      ['patch', 'deployments.apps', other],
      ['list', 'pods', other],
      ['get', 'secrets', watched],
      ['list', 'customresourcedefinitions.apiextensions.k8s.io'],
    ] as const)
      expect(await can(verb, target, ns)).toMatch(/: no$/);
  });
});

describe('CRD upgrades', () => {
  it('apply from the CLI of the new version over the installed CRDs', async () => {
    const crds = spawnSync(process.execPath, ['--import', 'tsx', join(REPO_DIR, 'cli', 'main.ts'), 'crds'], {
      encoding: 'utf8',
      cwd: REPO_DIR,
    });
    expect(crds.status).toBe(0);
    const applied = await kubectl(['apply', '--server-side', '-f', '-'], crds.stdout);
    expect(applied.stderr).toBe('');
    expect(applied.stdout).toContain(
      'customresourcedefinition.apiextensions.k8s.io/aiservices.aimesh.io serverside-applied',
    );
    expect(applied.stdout).toContain(
      'customresourcedefinition.apiextensions.k8s.io/sagas.aimesh.io serverside-applied',
    );
  });
});

// No operator runs here to serve them: webhook configurations the chart's objects leave
// behind (the validating one has failurePolicy Fail) would refuse every AiService and Saga
// that later suites apply to this shared control plane.
async function removeWebhookConfigurations(): Promise<void> {
  const removed = await kubectl([
    'delete',
    'mutatingwebhookconfiguration,validatingwebhookconfiguration',
    '-l',
    'app.kubernetes.io/name=aimesh-operator',
    '--ignore-not-found',
  ]);
  expect(removed.code).toBe(0);
}

afterAll(removeWebhookConfigurations);

describe('the one-file install (deploy/install.yaml)', () => {
  it('is what the chart renders now (npm run install-manifest)', async () => {
    const rendered = await runHelm(installManifestHelmArgs(REPO_DIR));
    expect(rendered.stderr).toBe('');
    expect(readFileSync(join(REPO_DIR, INSTALL_MANIFEST), 'utf8')).toBe(installManifest(rendered.stdout));
  });

  it('creates everything with kubectl apply --server-side -f', async () => {
    const file = join(REPO_DIR, INSTALL_MANIFEST);
    // The file's webhook configurations are removed after this file (afterAll), once checked.
    const applied = await kubectl(['apply', '--server-side', '-f', file]);
    expect(applied.stderr).toBe('');
    expect(applied.code).toBe(0);
    const objects = parseAllDocuments(readFileSync(file, 'utf8'))
      .map((d) => d.toJS() as Manifest | null)
      .filter((m): m is Manifest => m !== null);
    expect(objects.map((o) => o.kind).sort()).toEqual(
      [
        'ClusterRole',
        'ClusterRoleBinding',
        'CustomResourceDefinition',
        'CustomResourceDefinition',
        'Deployment',
        'MutatingWebhookConfiguration',
        'Namespace',
        'PodDisruptionBudget',
        'Role',
        'RoleBinding',
        'Secret',
        'Service',
        'Service',
        'ServiceAccount',
        'ValidatingWebhookConfiguration',
      ].sort(),
    );
    for (const object of objects) {
      const namespace = object.metadata.namespace ? ['-n', object.metadata.namespace] : [];
      const found = await kubectl(['get', object.kind, object.metadata.name, ...namespace, '-o', 'name']);
      expect(`${object.kind}/${object.metadata.name}: ${found.code}`).toBe(
        `${object.kind}/${object.metadata.name}: 0`,
      );
    }
    const deployment = objects.find((o) => o.kind === 'Deployment') as Manifest;
    expect(deployment.metadata).toMatchObject({ name: 'aimesh-operator', namespace: INSTALL_NAMESPACE });
  });
});
