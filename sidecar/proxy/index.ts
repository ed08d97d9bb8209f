export { listenHttp1AndH2c, type DualListener, type Handler } from './listener.js';
export { outboundHandler } from './handler.js';
export { Upstreams, Upstream } from './upstreams.js';
export { resolveTarget, type Target, type TargetResult } from './target.js';
export { propagate, type TraceHeaders } from './trace.js';
export { StaleCache } from './stale-cache.js';
