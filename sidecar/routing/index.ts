export { toRoutedEndpoint, newEndpointLoad, type RoutedEndpoint, type EndpointLoad } from './endpoint.js';
export {
  createBalancer,
  observeLatency,
  peakEwmaCost,
  fnv1a,
  weightedRandom,
  EWMA_DECAY_MS,
  type Balancer,
  type PickContext,
  type Strategy,
  type Random,
} from './balancer.js';
export { CircuitBreaker, DEFAULT_BREAKER, type BreakerSettings, type BreakerState } from './breaker.js';
export { OutlierDetector, DEFAULT_OUTLIER, type OutlierSettings } from './outlier.js';
export {
  retryable,
  backoffDelay,
  RetryBudget,
  type RetrySettings,
  type RetryCondition,
  type Failure,
  type BudgetSettings,
} from './retry.js';
