/**
 * The Saga reconciler: a Saga owns no objects of its own (its definitions travel in its
 * orchestrator's sidecar config, rendered by the AiService reconciler); this reports in
 * its status whether it can run: valid, and every AiService it names exists.
 */
import { formatErrors, validateResource } from '../../api/index.js';
import { stepServices } from '../../render/index.js';
import type { Reconciler } from '../controller/controller.js';
import type { EventRecorder } from '../events.js';
import type { ChildWriter } from '../kube/client.js';
import { SAGA } from '../kube/resources.js';
import type { Caches } from '../watches.js';
import { sameStatus } from './aiservice-status.js';
import { desiredSagaStatus } from './saga-status.js';

export interface SagaReconcilerOptions {
  client: ChildWriter;
  caches: Caches;
  events: Pick<EventRecorder, 'record'>;
}

export class SagaReconciler implements Reconciler {
  readonly name = 'saga';

  constructor(private readonly options: SagaReconcilerOptions) {}

  async reconcile(key: string): Promise<void> {
    const { caches, client, events } = this.options;
    const [namespace, name] = key.split('/') as [string, string];
    const live = caches.sagas.get(namespace, name);
    if (!live || live.metadata.deletionTimestamp) return;
    const validation = validateResource({ ...live, status: undefined });
    const saga = validation.ok && validation.resource.kind === 'Saga' ? validation.resource : undefined;
    const exists = (service: string) => caches.aiServices.get(namespace, service) !== undefined;
    const orchestrator = saga ? caches.aiServices.get(namespace, saga.spec.orchestrator) : undefined;
    const conditions = (orchestrator?.status?.conditions ?? []) as {
      type: string;
      status: string;
      message: string;
    }[];
    const orchestratorReady = conditions.find((c) => c.type === 'Ready');
    const status = desiredSagaStatus({
      generation: live.metadata.generation ?? 0,
      steps: Array.isArray(live.spec?.steps) ? live.spec.steps.length : 0,
      ...(validation.ok ? {} : { invalid: formatErrors(validation.errors).replaceAll('\n', '; ') }),
      orchestrator: saga?.spec.orchestrator ?? String(live.spec?.orchestrator ?? ''),
      orchestratorExists: orchestrator !== undefined,
      ...(orchestratorReady ? { orchestratorReady } : {}),
      missingServices: saga ? stepServices(saga).filter((s) => !exists(s)) : [],
      previous: live.status as { conditions?: never },
      now: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    });
    if (sameStatus(live.status, status as never)) return;
    await client.applyStatus(SAGA, namespace, name, status);
    const ready = status.conditions[0];
    if (ready && ready.status !== 'True') await events.record(live, 'Warning', ready.reason, ready.message);
  }
}
