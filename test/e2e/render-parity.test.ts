import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { exampleSystems, renderFiles } from '../../cli/synth.js';
import { validateFiles } from '../../cli/validate.js';
import { containsDesired } from '../../operator/controller/compare.js';
import type { KubeObject } from '../../render/index.js';
import { REPO_DIR } from '../env/components.js';
import { startControlPlane, waitFor, type ControlPlane } from '../env/index.js';
import { installOperatorIdentity, startOperator, type OperatorProcess } from './operator-process.js';

/**
 * The README promises that `aimesh render`, `npm start` and `cdk8s synth` write exactly
 * the objects the operator applies. This applies every example system to a real control
 * plane with the operator running, renders the same files the GitOps way, and compares
 * object by object, saga definitions in orchestrator configs and step grants included.
 */
const CHILD_KINDS =
  'serviceaccount,configmap,service,deployment,hpa,pdb,destinationrule,virtualservice,peerauthentication,authorizationpolicy';

let cluster: ControlPlane;
let operator: OperatorProcess | undefined;

type Live = KubeObject & { metadata: KubeObject['metadata'] & { namespace: string } };

beforeAll(async () => {
  cluster = await startControlPlane();
  const kubeconfig = await installOperatorIdentity(cluster);
  operator = await startOperator(kubeconfig, 'parity', join(cluster.dir, 'logs'));
});

afterAll(async () => {
  await operator?.process.stop();
  await cluster?.stop();
});

describe('GitOps render and the operator agree', () => {
  it('gives every example the same objects both ways', async () => {
    const systems = exampleSystems(join(REPO_DIR, 'examples'));
    const reports = validateFiles(systems);
    expect(reports.filter((r) => r.errors.length > 0)).toEqual([]);
    const resources = reports.flatMap((r) => (r.resource ? [r.resource] : []));
    const expected = renderFiles(resources).flatMap((f) => f.objects);
    // Every saga orchestrator carries its definitions: the bug this test exists for.
    const sagaConfigs = expected.filter(
      (o) => o.kind === 'ConfigMap' && JSON.stringify(o).includes('\\"steps\\"'),
    );
    expect(sagaConfigs.length).toBeGreaterThanOrEqual(2);

    const namespaces = [...new Set(resources.map((r) => r.metadata.namespace ?? 'default'))];
    for (const namespace of namespaces.filter((n) => n !== 'default'))
      expect((await cluster.kubectl(['create', 'namespace', namespace])).code).toBe(0);
    const applied = await cluster.kubectl(
      ['apply', '--server-side', '-f', '-'],
      resources.map((r) => stringify(r)).join('---\n'),
    );
    expect(applied.stderr).toBe('');

    const key = (o: KubeObject) => `${o.kind} ${o.metadata.namespace ?? 'default'}/${o.metadata.name}`;
    let mismatches: string[] = [];
    await waitFor(
      'the operator to apply what the GitOps render writes',
      async () => {
        const live = new Map((await liveChildren()).map((o) => [key(o), o]));
        mismatches = expected.flatMap((want) => {
          const have = live.get(key(want));
          if (!have) return [`missing ${key(want)}`];
          return containsDesired(have, want) ? [] : [`differs ${key(want)}`];
        });
        const extra = [...live.keys()].filter((k) => !expected.some((o) => key(o) === k));
        mismatches.push(...extra.map((k) => `extra ${k}`));
        return mismatches.length === 0;
      },
      180_000,
      // On a timeout the assertion below names every object that differs.
    ).catch(() => undefined);
    expect(mismatches).toEqual([]);
    expect((await liveChildren()).length).toBe(expected.length);
  });
});

async function liveChildren(): Promise<Live[]> {
  const result = await cluster.kubectl([
    'get',
    CHILD_KINDS,
    '--all-namespaces',
    '-l',
    'app.kubernetes.io/managed-by=aimesh-operator',
    '-o',
    'json',
  ]);
  if (result.code !== 0) throw new Error(result.stderr);
  return (JSON.parse(result.stdout) as { items: Live[] }).items;
}
