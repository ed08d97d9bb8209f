import { describe, expect, it } from '@jest/globals';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { REPO_DIR } from '../env/components.js';
import { kubeVersionFlag, runHelm } from '../env/index.js';
import { kubectl } from './shared.js';

const CHART = join(REPO_DIR, 'charts', 'aimesh-operator');
const NAMESPACE = 'aimesh-chart-e2e';
const SERVICE_ACCOUNT = `system:serviceaccount:${NAMESPACE}:aimesh-aimesh-operator`;

type Manifest = {
  kind: string;
  metadata: { name: string };
  spec?: {
    replicas?: number;
    template?: { spec: { containers: { args: string[]; securityContext: Record<string, unknown> }[] } };
  };
};

async function template(...set: string[]): Promise<Manifest[]> {
  const rendered = await runHelm([
    'template',
    'aimesh',
    CHART,
    '--namespace',
    NAMESPACE,
    kubeVersionFlag(),
    ...set.flatMap((s) => ['--set', s]),
  ]);
  expect(rendered.stderr).toBe('');
  expect(rendered.code).toBe(0);
  return parseAllDocuments(rendered.stdout)
    .map((d) => d.toJS() as Manifest | null)
    .filter((m): m is Manifest => m !== null);
}

async function canI(verb: string, target: string, namespace = 'default'): Promise<boolean> {
  const [resource, subresource] = target.split('/') as [string, string | undefined];
  const result = await kubectl([
    'auth',
    'can-i',
    verb,
    resource,
    ...(subresource ? [`--subresource=${subresource}`] : []),
    '-n',
    namespace,
    `--as=${SERVICE_ACCOUNT}`,
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
});
