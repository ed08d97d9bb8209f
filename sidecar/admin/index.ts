export { sidecarMetrics, type SidecarMetrics } from './metrics.js';
