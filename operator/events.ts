/**
 * Kubernetes Events about aimesh's resources, in one place. Events are informational: a
 * failure to record one is logged and counted, and never fails a reconcile.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from '../lib/log/index.js';
import { MANAGED_BY } from '../render/index.js';
import type { KubeClient } from './kube/client.js';
import { EVENT } from './kube/resources.js';

/** What an event is about: any object with a name (and a namespace, for namespaced ones). */
export interface Regarding {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; uid?: string };
}

export type EventType = 'Normal' | 'Warning';

export class EventRecorder {
  constructor(
    private readonly client: KubeClient,
    private readonly log: Logger,
  ) {}

  async record(regarding: Regarding, type: EventType, reason: string, message: string): Promise<void> {
    const now = new Date().toISOString();
    try {
      await this.client.create(EVENT, {
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { generateName: `${regarding.metadata.name}.`, namespace: regarding.metadata.namespace },
        involvedObject: {
          apiVersion: regarding.apiVersion,
          kind: regarding.kind,
          name: regarding.metadata.name,
          namespace: regarding.metadata.namespace,
          uid: regarding.metadata.uid,
        },
        type,
        reason,
        message: message.slice(0, 1024),
        source: { component: MANAGED_BY },
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      } as KubernetesObject);
    } catch (error) {
      this.log.warn('could not record event', {
        reason,
        regarding: `${regarding.kind}/${regarding.metadata.name}`,
        error,
      });
    }
  }
}
