/** The upstream settings the proxy needs at request time, compiled once per config load. */
import { durationMs, type SidecarConfig } from '../../api/index.js';

type UpstreamSpec = SidecarConfig['upstreams'][number];

export interface UpstreamConfig {
  name: string;
  protocol: 'http' | 'grpc';
  port?: number;
  timeoutMs?: number;
  perTryTimeoutMs?: number;
  retriesEnabled: boolean;
  fallback?: UpstreamSpec['fallback'];
  staleCacheMaxAgeMs?: number;
  hashOn?: UpstreamSpec['loadBalancer']['hashOn'];
  spec: UpstreamSpec;
}

export function compileUpstream(spec: UpstreamSpec): UpstreamConfig {
  return {
    name: spec.name,
    protocol: spec.protocol,
    ...(spec.port ? { port: spec.port } : {}),
    ...(spec.timeout ? { timeoutMs: durationMs(spec.timeout) } : {}),
    ...(spec.retries?.perTryTimeout ? { perTryTimeoutMs: durationMs(spec.retries.perTryTimeout) } : {}),
    retriesEnabled: (spec.retries?.attempts ?? 0) > 0,
    ...(spec.fallback ? { fallback: spec.fallback } : {}),
    ...(spec.fallback?.staleCache ? { staleCacheMaxAgeMs: durationMs(spec.fallback.staleCache.maxAge) } : {}),
    ...(spec.loadBalancer.hashOn ? { hashOn: spec.loadBalancer.hashOn } : {}),
    spec,
  };
}
