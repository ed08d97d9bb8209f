export {
  aggregatedMetrics,
  GONE_ENDPOINT,
  NO_ENDPOINT,
  sidecarMetrics,
  type MetricsJson,
  type SidecarMetrics,
} from './metrics.js';
export { redact } from './redact.js';
