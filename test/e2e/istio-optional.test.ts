import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_DIR, istioCrdsPath } from '../env/components.js';
import { startControlPlane, waitFor, type ControlPlane } from '../env/index.js';
import { installOperatorIdentity, startOperator, type OperatorProcess } from './operator-process.js';

/**
 * Istio is optional. On a cluster without its CRDs the operator reconciles everything
 * else, says in a condition and an event that mTLS and allowed callers are not enforced,
 * and never loops on errors; once the CRDs are installed, the policies appear with no
 * restart.
 */
const NS = 'no-istio';
let cluster: ControlPlane;
let operator: OperatorProcess | undefined;

type Condition = { type: string; status: string; reason: string; message: string };

beforeAll(async () => {
  cluster = await startControlPlane({ installCrds: false });
  const crdDir = join(REPO_DIR, 'crds');
  const files = readdirSync(crdDir).flatMap((f) => ['-f', join(crdDir, f)]);
  expect((await cluster.kubectl(['apply', '--server-side', ...files])).code).toBe(0);
  expect(
    (await cluster.kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd', '--all'])).code,
  ).toBe(0);
  expect((await cluster.kubectl(['create', 'namespace', NS])).code).toBe(0);
  const kubeconfig = await installOperatorIdentity(cluster);
  operator = await startOperator(kubeconfig, 'no-istio', join(cluster.dir, 'logs'));
});

afterAll(async () => {
  await operator?.process.stop();
  await cluster?.stop();
});

async function conditions(): Promise<Condition[]> {
  const got = await cluster.kubectl(['get', 'aiservice', 'guarded', '-n', NS, '-o', 'json']);
  if (got.code !== 0) return [];
  return ((JSON.parse(got.stdout) as { status?: { conditions?: Condition[] } }).status?.conditions ??
    []) as Condition[];
}

describe('the operator on a cluster without Istio', () => {
  it('reconciles the rest, reports that policies are off, and renders them once Istio is installed', async () => {
    const applied = await cluster.kubectl(
      ['apply', '--server-side', '-f', '-'],
      `apiVersion: aimesh.io/v1alpha1
kind: AiService
metadata: {name: guarded, namespace: ${NS}}
spec:
  image: registry.example.com/guarded:1.0.0
  upstreams: [{name: rag, timeout: 2s}]
  security:
    mtls: STRICT
    allowedCallers: [{serviceAccount: gateway}]
`,
    );
    expect(applied.stderr).toBe('');

    await waitFor('IstioPolicies=False', async () =>
      (await conditions()).some((c) => c.type === 'IstioPolicies' && c.reason === 'IstioNotInstalled'),
    );
    const off = (await conditions()).find((c) => c.type === 'IstioPolicies');
    expect(off?.message).toContain('spec.security');
    // Everything Istio does not serve was still applied.
    const deployment = await cluster.kubectl([
      'get',
      'deployment,service,configmap,serviceaccount',
      '-n',
      NS,
      '-o',
      'name',
    ]);
    expect(deployment.stdout).toContain('deployment.apps/guarded');
    expect(deployment.stdout).toContain('service/guarded');
    const events = await cluster.kubectl([
      'get',
      'events',
      '-n',
      NS,
      '--field-selector',
      'reason=IstioNotInstalled',
      '-o',
      'name',
    ]);
    expect(events.stdout.trim().split('\n').filter(Boolean)).toHaveLength(1);

    // The missing kinds are reported by name once, not as a loop of parse errors.
    const log = readFileSync(join(cluster.dir, 'logs', 'operator-no-istio.log'), 'utf8');
    expect(log).toContain('Istio is not installed');
    expect(log).not.toMatch(/JSON|Unexpected token/);
    expect(
      await operator?.counter('aimesh_operator_reconciles_total', (l) => l.includes('result="error"')),
    ).toBe(0);

    const istio = await cluster.kubectl(['apply', '--server-side', '-f', istioCrdsPath()]);
    expect(istio.code).toBe(0);
    await waitFor(
      'Istio policies after the CRDs appear',
      async () => {
        const got = await cluster.kubectl([
          'get',
          'authorizationpolicy,peerauthentication,destinationrule,virtualservice',
          '-n',
          NS,
          '-o',
          'name',
        ]);
        return got.code === 0 && got.stdout.trim().split('\n').filter(Boolean).length === 4;
      },
      90_000,
    );
    await waitFor('IstioPolicies=True', async () =>
      (await conditions()).some((c) => c.type === 'IstioPolicies' && c.status === 'True'),
    );
  });
});
