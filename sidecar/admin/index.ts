export { sidecarMetrics, type SidecarMetrics } from './metrics.js';
export { startAdminServer, type AdminOptions } from './server.js';
