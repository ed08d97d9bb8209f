export { GONE_ENDPOINT, NO_ENDPOINT, sidecarMetrics, type SidecarMetrics } from './metrics.js';
export { redact } from './redact.js';
