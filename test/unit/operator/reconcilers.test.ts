/**
 * The reconcilers with fakes only at their I/O edges (caches that hold objects, a writer
 * that records what it is asked to write): what each key leads to, without a control
 * plane. The e2e suite runs the same code against a real API server.
 */
import { describe, expect, it } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { KubernetesObject } from '@kubernetes/client-node';
import { AimeshError } from '../../../lib/errors/index.js';
import { createLogger } from '../../../lib/log/index.js';
import type { ChildWriter } from '../../../operator/kube/client.js';
import { AI_SERVICE, CHILD_TYPES, SAGA, type ResourceType } from '../../../operator/kube/resources.js';
import { AiServiceReconciler } from '../../../operator/reconcilers/aiservice.js';
import { SagaReconciler } from '../../../operator/reconcilers/saga.js';
import type { Caches, LiveObject, ObjectCache } from '../../../operator/watches.js';
import { REPO_DIR } from '../../env/components.js';
import { Writable } from 'node:stream';

class FakeCache<T extends LiveObject> implements ObjectCache<T> {
  readonly objects = new Map<string, T>();
  constructor(readonly type: ResourceType) {}
  get(namespace: string | undefined, name: string): T | undefined {
    return this.objects.get(`${namespace}/${name}`);
  }
  list(): T[] {
    return [...this.objects.values()];
  }
  ownedBy(uid: string): T[] {
    return this.list().filter((o) => o.metadata.ownerReferences?.some((r) => r.controller && r.uid === uid));
  }
  put(object: T): void {
    this.objects.set(`${object.metadata.namespace}/${object.metadata.name}`, object);
  }
}

interface Write {
  verb: 'apply' | 'applyStatus' | 'delete';
  kind: string;
  name: string;
  body?: unknown;
}

/** Records writes and, like the API server plus informers, reflects applies into the caches. */
function fakeCluster() {
  const aiServices = new FakeCache<LiveObject>(AI_SERVICE);
  const sagas = new FakeCache<LiveObject>(SAGA);
  const children = new Map(CHILD_TYPES.map((t) => [t.kind, new FakeCache<LiveObject>(t)]));
  const caches: Caches = { aiServices, sagas, children };
  const writes: Write[] = [];
  let failApplyOf: string | undefined;
  const writer: ChildWriter = {
    apply: async (type, object) => {
      const live = object as LiveObject;
      if (type.kind === failApplyOf) throw new Error('admission webhook denied the request');
      writes.push({ verb: 'apply', kind: type.kind, name: live.metadata.name });
      children.get(type.kind)?.put(structuredClone(live));
      return live as KubernetesObject;
    },
    applyStatus: async (type, namespace, name, status) => {
      writes.push({ verb: 'applyStatus', kind: type.kind, name, body: status });
      const cache = type.kind === 'Saga' ? sagas : aiServices;
      const live = cache.get(namespace, name);
      // A new object, as an informer's: whoever holds the old one still sees the old status.
      if (live) cache.put({ ...live, status: status as Record<string, unknown> });
    },
    delete: async (type, namespace, name) => {
      writes.push({ verb: 'delete', kind: type.kind, name });
      children.get(type.kind)?.objects.delete(`${namespace}/${name}`);
    },
  };
  const events: { type: string; reason: string }[] = [];
  const recorder = {
    record: async (_r: unknown, type: string, reason: string) => void events.push({ type, reason }),
  };
  return {
    aiServices,
    sagas,
    children,
    caches,
    writer,
    writes,
    events,
    recorder,
    failApplyOf: (kind: string | undefined) => (failApplyOf = kind),
  };
}

const quiet = createLogger('test', { destination: new Writable({ write: (_c, _e, done) => done() }) });

function loadExample(file: string): LiveObject[] {
  return parseAllDocuments(readFileSync(join(REPO_DIR, 'examples', file), 'utf8'))
    .map((d) => d.toJS() as LiveObject)
    .filter(Boolean)
    .map((o, i) => ({
      ...o,
      metadata: { ...o.metadata, uid: `uid-${o.metadata.name}-${i}`, generation: 1 },
    }));
}

/** Every resource of one example system. */
function loadSystem(system: string): LiveObject[] {
  return readdirSync(join(REPO_DIR, 'examples', system))
    .filter((f) => f.endsWith('.yaml'))
    .flatMap((f) => loadExample(`${system}/${f}`));
}

describe('AiService reconciler', () => {
  const setup = () => {
    const cluster = fakeCluster();
    const reconciler = new AiServiceReconciler({
      client: cluster.writer,
      caches: cluster.caches,
      events: cluster.recorder,
      log: quiet,
    });
    return { cluster, reconciler };
  };

  it('applies every child, reports status, then writes nothing on a second pass', async () => {
    const { cluster, reconciler } = setup();
    for (const o of loadExample('suoke-life/data.yaml'))
      if (o.kind === 'AiService') cluster.aiServices.put(o);
    await reconciler.reconcile('suoke-life/health-data-service');
    const applied = cluster.writes.filter((w) => w.verb === 'apply').map((w) => w.kind);
    expect(applied).toEqual(expect.arrayContaining(['ServiceAccount', 'Deployment', 'Service', 'ConfigMap']));
    expect(cluster.writes.at(-1)).toMatchObject({ verb: 'applyStatus', kind: 'AiService' });
    expect(cluster.events).toEqual([{ type: 'Normal', reason: 'Reconciled' }]);

    const before = cluster.writes.length;
    await reconciler.reconcile('suoke-life/health-data-service');
    expect(cluster.writes.slice(before)).toEqual([]);
  });

  it("gives a saga's orchestrator the definitions and its step services the grants", async () => {
    const { cluster, reconciler } = setup();
    for (const o of loadSystem('suoke-life')) (o.kind === 'Saga' ? cluster.sagas : cluster.aiServices).put(o);
    const orchestrator = cluster.aiServices.list().find((a) => a.metadata.name === 'health-orchestrator');
    expect(orchestrator).toBeDefined();
    await reconciler.reconcile('suoke-life/health-orchestrator');
    const config = cluster.children.get('ConfigMap')?.get('suoke-life', 'health-orchestrator-sidecar') as
      (LiveObject & { data: Record<string, string> }) | undefined;
    const sidecar = JSON.parse(Object.values(config?.data ?? {})[0] ?? '{}') as { sagas: { name: string }[] };
    expect(sidecar.sagas.map((s) => s.name)).toEqual(['health-data']);
  });

  it('deletes children it no longer wants', async () => {
    const { cluster, reconciler } = setup();
    const [service] = loadExample('suoke-life/data.yaml').filter((o) => o.kind === 'AiService');
    cluster.aiServices.put(service as LiveObject);
    const key = `suoke-life/${service?.metadata.name}`;
    await reconciler.reconcile(key);
    // A leftover the AiService owns but render does not want.
    cluster.children.get('HorizontalPodAutoscaler')?.put({
      apiVersion: 'autoscaling/v2',
      kind: 'HorizontalPodAutoscaler',
      metadata: {
        name: 'leftover',
        namespace: 'suoke-life',
        ownerReferences: [
          {
            apiVersion: 'aimesh.io/v1alpha1',
            uid: service?.metadata.uid ?? '',
            kind: 'AiService',
            name: 'x',
            controller: true,
          },
        ],
      },
    });
    await reconciler.reconcile(key);
    expect(cluster.writes.filter((w) => w.verb === 'delete')).toEqual([
      { verb: 'delete', kind: 'HorizontalPodAutoscaler', name: 'leftover' },
    ]);
  });

  it('reports Istio missing with one event, even when a reconcile runs before the cache shows the status', async () => {
    const cluster = fakeCluster();
    let istio = false;
    const reconciler = new AiServiceReconciler({
      client: cluster.writer,
      caches: cluster.caches,
      events: cluster.recorder,
      log: quiet,
      facts: () => ({ istio }),
    });
    const [service] = loadExample('suoke-life/data.yaml').filter(
      (o) => o.kind === 'AiService' && JSON.stringify(o).includes('"mtls"'),
    );
    cluster.aiServices.put(service as LiveObject);
    const key = `suoke-life/${service?.metadata.name}`;
    const istioEvents = () => cluster.events.filter((e) => e.reason === 'IstioNotInstalled');
    await reconciler.reconcile(key);
    expect(istioEvents()).toHaveLength(1);
    // The watch has not brought back the status just written: the cache still shows none.
    const cached = cluster.aiServices.get('suoke-life', service?.metadata.name as string) as LiveObject;
    delete cached.status;
    await reconciler.reconcile(key);
    expect(istioEvents()).toHaveLength(1);
    // Istio installed, then gone again: a new change, reported again.
    istio = true;
    await reconciler.reconcile(key);
    istio = false;
    await reconciler.reconcile(key);
    expect(istioEvents()).toHaveLength(2);
  });

  it('stops at the first failed apply, says why in status and an event, and asks to retry', async () => {
    const { cluster, reconciler } = setup();
    const [service] = loadExample('suoke-life/data.yaml').filter((o) => o.kind === 'AiService');
    cluster.aiServices.put(service as LiveObject);
    cluster.failApplyOf('Deployment');
    const failure = await reconciler
      .reconcile(`suoke-life/${service?.metadata.name}`)
      .catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(AimeshError);
    expect((failure as AimeshError).terminal).toBe(false);
    expect(cluster.events).toContainEqual({ type: 'Warning', reason: 'ApplyFailed' });
    const status = cluster.writes.find((w) => w.verb === 'applyStatus')?.body as {
      conditions: { type: string; reason: string }[];
    };
    expect(status.conditions.find((c) => c.type === 'Ready')?.reason).toBe('ApplyFailed');
  });

  it('applies the Deployment only after what its pods refer to, and not at all when that fails', async () => {
    const { cluster, reconciler } = setup();
    const [service] = loadExample('suoke-life/data.yaml').filter((o) => o.kind === 'AiService');
    cluster.aiServices.put(service as LiveObject);
    const key = `suoke-life/${service?.metadata.name}`;

    cluster.failApplyOf('ServiceAccount');
    await expect(reconciler.reconcile(key)).rejects.toBeInstanceOf(AimeshError);
    const applied = cluster.writes.filter((w) => w.verb === 'apply').map((w) => w.kind);
    // The rest of the first wave went through; the Deployment waits for its ServiceAccount.
    expect(applied).toEqual(expect.arrayContaining(['ConfigMap', 'Service']));
    expect(applied).not.toContain('Deployment');

    cluster.failApplyOf(undefined);
    await reconciler.reconcile(key);
    const kinds = cluster.writes.filter((w) => w.verb === 'apply').map((w) => w.kind);
    expect(kinds.at(-1)).toBe('Deployment');
    expect(kinds.filter((k) => k === 'Deployment')).toHaveLength(1);
    expect(kinds.lastIndexOf('ServiceAccount')).toBeLessThan(kinds.indexOf('Deployment'));
  });

  it('refuses an invalid spec with a terminal error and an InvalidSpec condition, applying nothing', async () => {
    const { cluster, reconciler } = setup();
    cluster.aiServices.put({
      apiVersion: 'aimesh.io/v1alpha1',
      kind: 'AiService',
      metadata: { name: 'broken', namespace: 'ns', uid: 'u', generation: 1 },
      spec: { image: 'x', replicas: 'three' },
    } as LiveObject);
    const failure = await reconciler.reconcile('ns/broken').catch((e: unknown) => e);
    expect((failure as AimeshError).terminal).toBe(true);
    expect(cluster.writes.map((w) => w.verb)).toEqual(['applyStatus']);
    expect(JSON.stringify(cluster.writes[0]?.body)).toContain('spec.replicas');
  });

  it('does nothing for an AiService that is gone or being deleted', async () => {
    const { cluster, reconciler } = setup();
    await reconciler.reconcile('ns/missing');
    expect(cluster.writes).toEqual([]);
  });
});

describe('Saga reconciler', () => {
  it('names what is missing, waits for the orchestrator to be Ready, then turns Ready', async () => {
    const cluster = fakeCluster();
    const reconciler = new SagaReconciler({
      client: cluster.writer,
      caches: cluster.caches,
      events: cluster.recorder,
    });
    for (const o of loadExample('suoke-life/health-data-saga.yaml')) cluster.sagas.put(o);
    await reconciler.reconcile('suoke-life/health-data');
    const notReady = cluster.writes.at(-1)?.body as { conditions: { status: string; reason: string }[] };
    expect(notReady.conditions[0]).toMatchObject({ status: 'False', reason: 'OrchestratorNotFound' });
    expect(cluster.events).toEqual([{ type: 'Warning', reason: 'OrchestratorNotFound' }]);

    for (const o of loadSystem('suoke-life')) if (o.kind === 'AiService') cluster.aiServices.put(o);
    await reconciler.reconcile('suoke-life/health-data');
    const waiting = cluster.writes.at(-1)?.body as { conditions: { reason: string }[] };
    expect(waiting.conditions[0]?.reason).toBe('OrchestratorNotReady');

    const orchestrator = cluster.aiServices.get('suoke-life', 'health-orchestrator') as LiveObject;
    orchestrator.status = {
      conditions: [{ type: 'Ready', status: 'True', message: '2 of 2 replicas available' }],
    };
    await reconciler.reconcile('suoke-life/health-data');
    const ready = cluster.writes.at(-1)?.body as { conditions: { status: string }[] };
    expect(ready.conditions[0]?.status).toBe('True');
  });
});
