import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { missGauge } from './admission/scan.js';

export interface OperatorMetrics {
  registry: Registry;
  reconciles: Counter<'controller' | 'result'>;
  reconcileDuration: Histogram<'controller'>;
  queueDepth: Gauge<'controller'>;
  apiWrites: Counter<'verb' | 'kind'>;
  isLeader: Gauge;
  podsWithoutSidecar: Gauge<'namespace'>;
}

export function operatorMetrics(): OperatorMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'aimesh_operator_' });
  return {
    registry,
    reconciles: new Counter({
      name: 'aimesh_operator_reconciles_total',
      help: 'Reconciles by controller and result (success, error: retried with backoff, terminal: not retried).',
      labelNames: ['controller', 'result'],
      registers: [registry],
    }),
    reconcileDuration: new Histogram({
      name: 'aimesh_operator_reconcile_duration_seconds',
      help: 'Time one reconcile takes, by controller.',
      labelNames: ['controller'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    queueDepth: new Gauge({
      name: 'aimesh_operator_workqueue_depth',
      help: 'Keys waiting in the work queue, by controller.',
      labelNames: ['controller'],
      registers: [registry],
    }),
    apiWrites: new Counter({
      name: 'aimesh_operator_api_writes_total',
      help: 'Mutating requests sent to the API server, by verb and kind.',
      labelNames: ['verb', 'kind'],
      registers: [registry],
    }),
    podsWithoutSidecar: missGauge(registry),
    isLeader: new Gauge({
      name: 'aimesh_operator_is_leader',
      help: '1 while this replica holds the leader lease.',
      registers: [registry],
    }),
  };
}
