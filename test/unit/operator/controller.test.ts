import { describe, expect, it } from '@jest/globals';
import { validateResource, type AiService } from '../../../api/index.js';
import { containsDesired } from '../../../operator/controller/compare.js';
import { WorkQueue } from '../../../operator/controller/queue.js';
import { desiredStatus, sameStatus } from '../../../operator/reconcilers/aiservice-status.js';
import { leaseAction, microTime } from '../../../operator/leader/decision.js';

describe('WorkQueue', () => {
  it('queues a key once, never hands one key to two workers, and requeues a key changed while in work', async () => {
    const queue = new WorkQueue();
    queue.add('ns/a');
    queue.add('ns/a');
    queue.add('ns/b');
    expect(queue.length).toBe(2);
    const first = await queue.get();
    expect(first).toBe('ns/a');
    queue.add('ns/a'); // changed while in work: not handed out again yet
    expect(await queue.get()).toBe('ns/b');
    const waiting = queue.get();
    queue.done('ns/a'); // now it comes back
    expect(await waiting).toBe('ns/a');
    queue.shutDown();
    expect(await queue.get()).toBeUndefined();
  });

  it('backs off failed keys exponentially, capped, and forgets after success', () => {
    const queue = new WorkQueue({ baseDelayMs: 10, maxDelayMs: 50 });
    expect([1, 2, 3, 4, 5].map(() => queue.addRateLimited('ns/a'))).toEqual([10, 20, 40, 50, 50]);
    queue.forget('ns/a');
    expect(queue.addRateLimited('ns/a')).toBe(10);
    queue.shutDown();
  });
});

describe('containsDesired', () => {
  it('is true when the live object holds every desired field, whatever else it has', () => {
    expect(containsDesired({ a: 1, b: { c: 'x', d: 2 }, managed: 'other' }, { a: 1, b: { c: 'x' } })).toBe(
      true,
    );
    expect(containsDesired({ spec: { replicas: 7 } }, { spec: { replicas: 1 } })).toBe(false);
    expect(containsDesired({ list: [1, 2, 3] }, { list: [1, 2] })).toBe(false);
    expect(containsDesired({ cpu: '1' }, { cpu: 1 })).toBe(true);
    expect(containsDesired({}, { missing: 'x' })).toBe(false);
  });
});

describe('AiService status', () => {
  const resource = (() => {
    const result = validateResource({
      apiVersion: 'aimesh.io/v1alpha1',
      kind: 'AiService',
      metadata: { name: 'xiaoai', namespace: 'suoke-life', generation: 3 },
      spec: { image: 'registry.example.com/xiaoai:1', replicas: 2 },
    });
    if (!result.ok) throw new Error(JSON.stringify(result.errors));
    return result.resource as AiService & { metadata: { generation: number } };
  })();
  const now = '2026-11-24T10:00:00Z';

  it('says Ready only when the rollout is done and enough replicas are available', () => {
    const rolling = desiredStatus({
      resource,
      deployment: {
        generation: 1,
        observedGeneration: 1,
        replicas: 2,
        updatedReplicas: 2,
        availableReplicas: 1,
      },
      now,
    });
    expect(rolling.observedGeneration).toBe(3);
    expect(rolling.conditions.find((c) => c.type === 'Ready')).toMatchObject({
      status: 'False',
      reason: 'ReplicasUnavailable',
      message: '1 of 2 replicas available',
    });
    const ready = desiredStatus({
      resource,
      deployment: {
        generation: 1,
        observedGeneration: 1,
        replicas: 2,
        updatedReplicas: 2,
        readyReplicas: 2,
        availableReplicas: 2,
      },
      now,
    });
    expect(ready.conditions.find((c) => c.type === 'Ready')).toMatchObject({
      status: 'True',
      reason: 'Available',
    });
    expect(ready.conditions.find((c) => c.type === 'Progressing')).toMatchObject({
      status: 'False',
      reason: 'RolloutComplete',
    });
    expect(ready).toMatchObject({ replicas: 2, readyReplicas: 2 });
  });

  it('keeps Progressing while updated replicas are not available (0 of 2 is not a finished rollout)', () => {
    const stuck = desiredStatus({
      resource,
      deployment: {
        generation: 1,
        observedGeneration: 1,
        replicas: 2,
        updatedReplicas: 2,
        availableReplicas: 0,
      },
      now,
    });
    expect(stuck.conditions.find((c) => c.type === 'Progressing')).toMatchObject({
      status: 'True',
      reason: 'RollingOut',
      message: 'rolling out: 0 of 2 replicas available',
    });
    expect(stuck.conditions.find((c) => c.type === 'Ready')?.status).toBe('False');
  });

  it("reports the Deployment's own failure reason as Degraded", () => {
    const failing = desiredStatus({
      resource,
      deployment: {
        generation: 1,
        observedGeneration: 1,
        replicas: 0,
        failure: { reason: 'FailedCreate', message: 'Deployment: pods "x" is forbidden: exceeded quota' },
      },
      now,
    });
    expect(failing.conditions.find((c) => c.type === 'Degraded')).toMatchObject({
      status: 'True',
      reason: 'FailedCreate',
    });
  });

  it('says when Istio is not there to enforce mTLS and callers, and nothing when it is not asked for', () => {
    const off = desiredStatus({ resource, istio: { installed: false }, now });
    expect(off.conditions.find((c) => c.type === 'IstioPolicies')).toMatchObject({
      status: 'False',
      reason: 'IstioNotInstalled',
    });
    const on = desiredStatus({ resource, istio: { installed: true }, now });
    expect(on.conditions.find((c) => c.type === 'IstioPolicies')?.status).toBe('True');
    expect(desiredStatus({ resource, now }).conditions.map((c) => c.type)).not.toContain('IstioPolicies');
  });

  it('reports apply failures as Degraded with their reason', () => {
    const failed = desiredStatus({
      resource,
      applyError: { reason: 'ApplyFailed', message: 'Deployment/xiaoai: forbidden' },
      now,
    });
    expect(failed.conditions.find((c) => c.type === 'Degraded')).toMatchObject({
      status: 'True',
      reason: 'ApplyFailed',
    });
    expect(failed.conditions.find((c) => c.type === 'Ready')).toMatchObject({
      status: 'False',
      message: 'Deployment/xiaoai: forbidden',
    });
  });

  it('keeps transition times while a condition holds, so an unchanged status is the same status', () => {
    const first = desiredStatus({ resource, now });
    const later = desiredStatus({ resource: { ...resource, status: first }, now: '2026-11-24T11:00:00Z' });
    expect(later.conditions.map((c) => c.lastTransitionTime)).toEqual(first.conditions.map(() => now));
    expect(sameStatus(first, later)).toBe(true);
    expect(sameStatus(first, { ...later, replicas: 5 })).toBe(false);
  });
});

describe('leader election decisions', () => {
  const renewTime = microTime(Date.parse('2026-11-24T10:00:00Z'));

  it('creates a missing lease, renews its own, waits on a live one and takes over an expired one', () => {
    expect(leaseAction(undefined, 'a', 0)).toBe('create');
    expect(leaseAction({ holderIdentity: 'a', renewTime, leaseDurationSeconds: 15 }, 'a', 0)).toBe('renew');
    const held = { holderIdentity: 'b', renewTime, leaseDurationSeconds: 15 };
    expect(leaseAction(held, 'a', Date.parse('2026-11-24T10:00:14Z'))).toBe('wait');
    expect(leaseAction(held, 'a', Date.parse('2026-11-24T10:00:16Z'))).toBe('take-over');
    expect(leaseAction({ holderIdentity: '' }, 'a', 0)).toBe('take-over');
  });

  it('writes Kubernetes MicroTime', () => {
    expect(renewTime).toBe('2026-11-24T10:00:00.000000Z');
  });
});
