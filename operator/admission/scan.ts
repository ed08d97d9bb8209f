/**
 * The I/O half of miss detection: list what findMisses needs, reading only namespaces that
 * opt in or hold an adopting AiService (pods are listed, never cached: a cluster's pods are
 * far more than the operator should hold in memory), and, on the leader, report what it
 * finds: one event per missed pod on its controller, a gauge, and the adopting AiService's
 * condition (through its reconcile).
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import { Gauge, type Registry } from 'prom-client';
import { INJECT_ENABLED, INJECT_LABEL, validateResource } from '../../api/index.js';
import { describe } from '../../lib/errors/index.js';
import type { Logger } from '../../lib/log/index.js';
import type { EventRecorder } from '../events.js';
import type { KubeClient } from '../kube/client.js';
import { AI_SERVICE, NAMESPACE, POD } from '../kube/resources.js';
import { findMisses, NEVER_INJECTED, type LivePod, type Miss } from './misses.js';

export interface ScanOptions {
  /** More namespaces never injected: the operator's own. */
  excluded: string[];
  sidecarImage: string;
  /** One namespace only; all when undefined. */
  namespace?: string;
}

type Namespace = KubernetesObject & { metadata: { name: string; labels?: Record<string, string> } };

/** Lists what matters and returns the pods that should have the sidecar but do not. */
export async function scanForMisses(
  client: Pick<KubeClient, 'list' | 'get'>,
  options: ScanOptions,
): Promise<Miss[]> {
  const namespaces = options.namespace
    ? [await client.get<Namespace>(NAMESPACE, '', options.namespace)].filter(
        (n): n is Namespace => n !== undefined,
      )
    : (await client.list<Namespace>(NAMESPACE)).items;
  const aiServices = (await client.list(AI_SERVICE, { namespace: options.namespace })).items.flatMap(
    (live) => {
      const result = validateResource({ ...live, status: undefined });
      return result.ok && result.resource.kind === 'AiService' ? [result.resource] : [];
    },
  );
  const excluded = new Set([...NEVER_INJECTED, ...options.excluded]);
  const candidates = new Set<string>([
    ...namespaces
      .filter((n) => n.metadata.labels?.[INJECT_LABEL] === INJECT_ENABLED)
      .map((n) => n.metadata.name),
    ...aiServices.filter((a) => a.spec.workload).map((a) => a.metadata.namespace ?? 'default'),
  ]);
  const pods = new Map<string, LivePod>();
  for (const namespace of [...candidates].filter((n) => !excluded.has(n)).sort())
    for (const pod of (await client.list<KubernetesObject>(POD, { namespace })).items)
      pods.set(`${namespace}/${pod.metadata?.name}`, pod as LivePod);
  // Pods that opt in themselves may be anywhere.
  const labelled = await client.list<KubernetesObject>(POD, {
    namespace: options.namespace,
    labelSelector: `${INJECT_LABEL}=${INJECT_ENABLED}`,
  });
  for (const pod of labelled.items)
    pods.set(`${pod.metadata?.namespace}/${pod.metadata?.name}`, pod as LivePod);
  return findMisses({
    namespaces: namespaces.map((n) => ({ name: n.metadata.name, labels: n.metadata.labels ?? {} })),
    pods: [...pods.values()],
    aiServices,
    excluded: options.excluded,
    sidecarImage: options.sidecarImage,
  });
}

export interface MissDetectorOptions extends ScanOptions {
  client: KubeClient;
  events: Pick<EventRecorder, 'record'>;
  log: Logger;
  gauge: Gauge<'namespace'>;
  intervalMs: number;
  /** Called with the adopting AiServices (namespace/name) whose misses changed. */
  onAdoptedChanged: (keys: string[]) => void;
}

/** The gauge lives as long as the process; detectors come and go with leadership. */
export function missGauge(registry: Registry): Gauge<'namespace'> {
  return new Gauge({
    name: 'aimesh_operator_pods_without_sidecar',
    help: 'Pods that should run the aimesh sidecar but do not (see `aimesh doctor`), by namespace.',
    labelNames: ['namespace'],
    registers: [registry],
  });
}

export class MissDetector {
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private readonly reported = new Set<string>();
  private byAiService = new Map<string, Miss[]>();

  constructor(private readonly options: MissDetectorOptions) {}

  start(): void {
    const tick = () => {
      this.scan()
        .catch((error: unknown) =>
          this.options.log.warn('miss detection failed; retrying', { error: describe(error) }),
        )
        .finally(() => {
          if (!this.stopped) this.timer = setTimeout(tick, this.options.intervalMs);
        });
    };
    tick();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** The misses among the pods an AiService adopts, as of the last scan. */
  missesOf(key: string): Miss[] {
    return this.byAiService.get(key) ?? [];
  }

  private async scan(): Promise<void> {
    const misses = await scanForMisses(this.options.client, this.options);
    if (this.stopped) return;
    this.options.gauge.reset();
    for (const miss of misses) this.options.gauge.inc({ namespace: miss.namespace });
    for (const miss of misses) {
      const id = miss.podUid ?? `${miss.namespace}/${miss.pod}`;
      if (this.reported.has(id)) continue;
      this.reported.add(id);
      this.options.log.warn('pod runs without the aimesh sidecar', { ...miss });
      const regarding = miss.owner
        ? {
            ...miss.owner,
            metadata: { name: miss.owner.name, namespace: miss.namespace, uid: miss.owner.uid },
          }
        : {
            apiVersion: 'v1',
            kind: 'Pod',
            metadata: {
              name: miss.pod,
              namespace: miss.namespace,
              ...(miss.podUid ? { uid: miss.podUid } : {}),
            },
          };
      await this.options.events.record(
        regarding,
        'Warning',
        'SidecarMissing',
        `pod ${miss.pod} runs without the aimesh sidecar: ${miss.reason}. Fix: ${miss.fix}`,
      );
    }
    // Forget pods that are fixed or gone, so the set stays as small as the problem.
    const current = new Set(misses.map((m) => m.podUid ?? `${m.namespace}/${m.pod}`));
    for (const id of this.reported) if (!current.has(id)) this.reported.delete(id);
    const next = new Map<string, Miss[]>();
    for (const miss of misses)
      if (miss.adoptedBy) {
        const key = `${miss.namespace}/${miss.adoptedBy}`;
        next.set(key, [...(next.get(key) ?? []), miss]);
      }
    const changed = [...new Set([...next.keys(), ...this.byAiService.keys()])].filter(
      (key) => JSON.stringify(next.get(key) ?? []) !== JSON.stringify(this.byAiService.get(key) ?? []),
    );
    this.byAiService = next;
    if (changed.length > 0) this.options.onAdoptedChanged(changed);
  }
}
