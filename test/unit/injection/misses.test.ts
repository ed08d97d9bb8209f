import { describe, expect, it } from '@jest/globals';
import { validateResource, type AiService } from '../../../api/index.js';
import { findMisses, type LivePod } from '../../../operator/admission/misses.js';
import { desiredStatus } from '../../../operator/reconcilers/aiservice-status.js';

const adopting = (() => {
  const result = validateResource({
    apiVersion: 'aimesh.io/v1alpha1',
    kind: 'AiService',
    metadata: { name: 'late', namespace: 'quiet' },
    spec: { workload: { selector: { matchLabels: { app: 'late' } } } },
  });
  if (!result.ok) throw new Error('invalid');
  return result.resource as AiService;
})();

function pod(
  name: string,
  namespace: string,
  extra: Partial<LivePod['metadata']> = {},
  injected = false,
): LivePod {
  return {
    metadata: {
      name,
      namespace,
      uid: `uid-${name}`,
      labels: { app: name, 'pod-template-hash': 'abc12' },
      ownerReferences: [
        { apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${name}-abc12`, uid: 'rs', controller: true },
      ],
      ...extra,
    },
    spec: { containers: [{ name: 'app' }, ...(injected ? [{ name: 'aimesh-sidecar' }] : [])] },
  };
}

describe('findMisses', () => {
  it('names each pod that should run the sidecar and does not, with the reason and the fix', () => {
    const misses = findMisses({
      namespaces: [
        { name: 'shop', labels: { 'aimesh.io/inject': 'enabled' } },
        { name: 'quiet', labels: {} },
        { name: 'kube-system', labels: { 'aimesh.io/inject': 'enabled' } },
      ],
      pods: [
        pod('web', 'shop'),
        pod('done', 'shop', {}, true),
        pod('out', 'shop', { labels: { app: 'out', 'aimesh.io/inject': 'disabled' } }),
        pod('bad', 'shop', { annotations: { 'aimesh.io/app-port': 'http' } }),
        pod('late', 'quiet'),
        pod('coredns', 'kube-system'),
        pod('mine', 'aimesh-system'),
      ],
      aiServices: [adopting],
      excluded: ['aimesh-system'],
      sidecarImage: 'aimesh:test',
    });
    expect(misses.map((m) => [m.namespace, m.pod])).toEqual([
      ['quiet', 'late'],
      ['shop', 'bad'],
      ['shop', 'web'],
    ]);
    const [late, bad, web] = misses;
    expect(late).toMatchObject({
      adoptedBy: 'late',
      fix: expect.stringContaining('kubectl label namespace quiet aimesh.io/inject=enabled'),
    });
    expect(bad?.reason).toMatch(
      /the webhook refused it: not injected: annotation aimesh.io\/app-port="http"/,
    );
    expect(web).toMatchObject({
      owner: { kind: 'ReplicaSet', name: 'web-abc12' },
      fix: 'kubectl rollout restart deployment/web -n shop',
      reason: expect.stringContaining('did not answer'),
    });
  });
});

describe('status of an adopting AiService', () => {
  it('is Ready when every adopted pod has the sidecar, and says which do not', () => {
    const status = (missing: { pod: string; reason: string; fix: string }[]) =>
      desiredStatus({ resource: adopting, adoption: { missing }, now: '2026-01-01T00:00:00Z' }).conditions;
    expect(status([]).find((c) => c.type === 'Ready')?.status).toBe('True');
    const conditions = status([
      {
        pod: 'late-1',
        reason: 'created while down',
        fix: 'kubectl rollout restart deployment/late -n quiet',
      },
    ]);
    expect(conditions.find((c) => c.type === 'SidecarInjected')).toMatchObject({
      status: 'False',
      reason: 'PodsWithoutSidecar',
      message: expect.stringContaining(
        'late-1 (created while down; fix: kubectl rollout restart deployment/late -n quiet)',
      ),
    });
    expect(conditions.find((c) => c.type === 'Ready')?.status).toBe('False');
  });
});
