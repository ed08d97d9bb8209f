export { sidecarMetrics, type SidecarMetrics } from './metrics.js';
export { redact } from './redact.js';
