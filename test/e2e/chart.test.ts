import { afterAll, describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import {
  INSTALL_MANIFEST,
  INSTALL_NAMESPACE,
  installManifest,
  installManifestHelmArgs,
} from '../../tools/install-manifest.js';
import { REPO_DIR } from '../env/components.js';
import { kubeVersionFlag, runHelm } from '../env/index.js';
import { kubectl } from './shared.js';

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
  });

  it('installs on a real API server, and its RBAC is enough for the operator and no more', async () => {
    await kubectl(['create', 'namespace', NAMESPACE]);
    const manifests = await template();
    const applied = await kubectl(
      ['apply', '--server-side', '-f', '-'],
      JSON.stringify({ apiVersion: 'v1', kind: 'List', items: manifests }),
    );
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

  it('with operator.watchNamespace grants a Role in that namespace only, nothing cluster-wide', async () => {
    const namespace = 'aimesh-chart-scoped';
    const watched = 'aimesh-chart-team-a';
    for (const ns of [namespace, watched]) await kubectl(['create', 'namespace', ns]);
    const manifests = await templateIn(namespace, 'scoped', `operator.watchNamespace=${watched}`);
    expect(manifests.map((m) => m.kind)).not.toContain('ClusterRole');
    expect(manifests.map((m) => m.kind)).not.toContain('ClusterRoleBinding');
    const role = manifests.find((m) => m.kind === 'Role' && m.metadata.name === 'scoped-aimesh-operator');
    expect(role?.metadata.namespace).toBe(watched);
    const applied = await kubectl(
      ['apply', '--server-side', '-f', '-'],
      JSON.stringify({ apiVersion: 'v1', kind: 'List', items: manifests }),
    );
    await removeWebhookConfigurations();
    expect(applied.stderr).toBe('');
    const account = `system:serviceaccount:${namespace}:scoped-aimesh-operator`;
    expect(await canI('patch', 'deployments.apps', watched, account)).toBe(true);
    expect(await canI('watch', 'aiservices.aimesh.io', watched, account)).toBe(true);
    expect(await canI('patch', 'deployments.apps', 'default', account)).toBe(false);
    expect(await canI('watch', 'aiservices.aimesh.io', 'default', account)).toBe(false);
    expect(await canI('update', 'leases.coordination.k8s.io', namespace, account)).toBe(true);
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
