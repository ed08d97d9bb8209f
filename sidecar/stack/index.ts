export { Upstream, type UpstreamDeps, type StackTracing } from './upstream.js';
export { HttpTransport, H2Transport, type PoolOptions } from './transport.js';
export { ResponseCache, type CachedResponse } from './cache.js';
export { endToEnd } from './headers.js';
export { propagate, type TraceHeaders } from './trace.js';
export type { EndpointView, RoutingPolicy } from './policy.js';
export {
  CallSignal,
  type Headers,
  type StackEndpoint,
  type StackRequest,
  type StackResponse,
  type Transport,
  type TransportResponse,
  type TryRequest,
  type Upgraded,
  type UpgradeRequest,
} from './types.js';
