import { ApiObject } from 'cdk8s';
import type { Saga } from '../api/index.js';
import { grantsFor } from './saga.js';
import type { Construct } from 'constructs';
import { durationMs, type AiService, type LoadBalancerStrategy, type Upstream } from '../api/index.js';
import { labelsFor, selectorFor, upstreamPolicyName } from './names.js';

export interface IstioOptions {
  namespace: string;
  clusterDomain: string;
  trustDomain: string;
  /** Valid Sagas of the namespace: their orchestrators get grants on this step service. */
  sagas: readonly Saga[];
}

/**
 * Istio has no peak-EWMA, smooth weighted or priority balancer; for those the aimesh
 * sidecar does the real balancing and Istio gets its nearest equivalent.
 */
const ISTIO_LOAD_BALANCER: Record<Exclude<LoadBalancerStrategy, 'consistent-hash'>, string> = {
  'round-robin': 'ROUND_ROBIN',
  random: 'RANDOM',
  'weighted-round-robin': 'ROUND_ROBIN',
  'least-request': 'LEAST_REQUEST',
  ewma: 'LEAST_REQUEST',
  priority: 'ROUND_ROBIN',
};

/**
 * Whether an AiService asks for something only Istio enforces: mTLS between workloads
 * or a list of allowed callers. Without Istio those are not enforced, and status says so.
 */
export function asksForIstio(resource: AiService): boolean {
  const security = resource.spec.security;
  return security.mtls !== 'DISABLE' || (security.allowedCallers?.length ?? 0) > 0;
}

/**
 * Who does what when both the aimesh sidecar and Istio's Envoy are in the path: the aimesh
 * sidecar owns endpoint choice, retries, timeouts and ejection (it is configured per
 * upstream and sees every try); Istio owns mTLS and authorization. So:
 * - per upstream, a DestinationRule scoped to this workload whose load balancer is
 *   PASSTHROUGH: Envoy forwards to the endpoint the sidecar chose instead of choosing again
 *   (so EWMA, consistent hash and priority hold);
 * - one VirtualService per host, rendered by the AiService that owns the host, with
 *   retries off: Envoy never retries a call the sidecar may retry, so a call is tried at
 *   most as often as the caller's spec says. One per host, as Istio requires for mesh
 *   traffic (several would be ignored but one, and `istioctl analyze` reports IST0109).
 * With the sidecar disabled nobody else balances: the DestinationRule then carries the
 * strategy and the breaker as Envoy's load balancer and outlier detection.
 */
export function addIstioPolicies(scope: Construct, resource: AiService, options: IstioOptions): void {
  const { name } = resource.metadata;
  const metadata = (objectName: string) => ({
    name: objectName,
    namespace: options.namespace,
    labels: labelsFor(resource),
  });
  const sidecarBalances = resource.spec.sidecar.enabled;

  for (const upstream of resource.spec.upstreams) {
    const host = `${upstream.name}.${upstream.namespace ?? options.namespace}.svc.${options.clusterDomain}`;
    new ApiObject(scope, `destination-rule-${upstream.name}`, {
      apiVersion: 'networking.istio.io/v1',
      kind: 'DestinationRule',
      metadata: metadata(upstreamPolicyName(name, upstream.name)),
      spec: {
        host,
        workloadSelector: { matchLabels: selectorFor(resource) },
        exportTo: ['.'],
        trafficPolicy: sidecarBalances ? passthroughPolicy(upstream) : trafficPolicy(upstream),
      },
    });
  }

  const ownHost = `${name}.${options.namespace}.svc.${options.clusterDomain}`;
  new ApiObject(scope, 'virtual-service', {
    apiVersion: 'networking.istio.io/v1',
    kind: 'VirtualService',
    metadata: metadata(name),
    spec: {
      hosts: [ownHost],
      http: [{ route: [{ destination: { host: ownHost } }], retries: { attempts: 0 } }],
    },
  });

  new ApiObject(scope, 'peer-authentication', {
    apiVersion: 'security.istio.io/v1',
    kind: 'PeerAuthentication',
    metadata: metadata(name),
    spec: { selector: { matchLabels: selectorFor(resource) }, mtls: { mode: resource.spec.security.mtls } },
  });

  const callers = resource.spec.security.allowedCallers;
  if (callers !== undefined) {
    new ApiObject(scope, 'authorization-policy', {
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata: metadata(name),
      spec: {
        selector: { matchLabels: selectorFor(resource) },
        action: 'ALLOW',
        // An ALLOW policy with no rules allows nothing: `allowedCallers: []` denies all.
        rules: [
          ...callers.map((caller) => ({
            from: [
              {
                source: {
                  principals: [
                    `${options.trustDomain}/ns/${caller.namespace ?? options.namespace}/sa/${caller.serviceAccount}`,
                  ],
                },
              },
            ],
            ...(caller.methods.length || caller.paths.length
              ? {
                  to: [
                    {
                      operation: {
                        ...(caller.methods.length ? { methods: caller.methods } : {}),
                        ...(caller.paths.length ? { paths: caller.paths } : {}),
                      },
                    },
                  ],
                }
              : {}),
          })),
          // Orchestrators of sagas whose steps call this service: exactly those methods and paths.
          ...grantsFor(resource.metadata.name, options.sagas).map((grant) => ({
            from: [
              {
                source: {
                  principals: [`${options.trustDomain}/ns/${options.namespace}/sa/${grant.orchestrator}`],
                },
              },
            ],
            to: [{ operation: { methods: grant.methods, paths: grant.paths } }],
          })),
        ],
      },
    });
  }
}

/** The sidecar chose the endpoint: Envoy keeps it, and only bounds connections. */
function passthroughPolicy(upstream: Upstream): Record<string, unknown> {
  const pool = connectionPool(upstream);
  return { loadBalancer: { simple: 'PASSTHROUGH' }, ...(pool ? { connectionPool: pool } : {}) };
}

function connectionPool(upstream: Upstream): Record<string, unknown> | undefined {
  const { circuitBreaker } = upstream;
  if (!circuitBreaker) return undefined;
  const tcp = circuitBreaker.maxConnections ? { maxConnections: circuitBreaker.maxConnections } : undefined;
  const http = {
    ...(circuitBreaker.maxPendingRequests
      ? { http1MaxPendingRequests: circuitBreaker.maxPendingRequests }
      : {}),
    ...(circuitBreaker.maxRequestsPerConnection
      ? { maxRequestsPerConnection: circuitBreaker.maxRequestsPerConnection }
      : {}),
  };
  if (!tcp && Object.keys(http).length === 0) return undefined;
  return { ...(tcp ? { tcp } : {}), ...(Object.keys(http).length ? { http } : {}) };
}

function trafficPolicy(upstream: Upstream): Record<string, unknown> {
  const { loadBalancer, circuitBreaker, outlierDetection } = upstream;
  const policy: Record<string, unknown> = {
    loadBalancer:
      loadBalancer.strategy === 'consistent-hash'
        ? { consistentHash: consistentHash(loadBalancer.hashOn ?? {}) }
        : { simple: ISTIO_LOAD_BALANCER[loadBalancer.strategy] },
  };
  const pool = connectionPool(upstream);
  if (pool) policy.connectionPool = pool;
  // Istio's breaker is outlier ejection: explicit outlierDetection wins, else the breaker's
  // consecutive failures and open time become the ejection threshold and time.
  if (outlierDetection) {
    policy.outlierDetection = {
      consecutive5xxErrors: outlierDetection.consecutive5xx,
      interval: istioDuration(outlierDetection.interval),
      baseEjectionTime: istioDuration(outlierDetection.baseEjectionTime),
      maxEjectionPercent: outlierDetection.maxEjectionPercent,
    };
  } else if (circuitBreaker) {
    policy.outlierDetection = {
      consecutive5xxErrors: circuitBreaker.consecutiveFailures,
      interval: '10s',
      baseEjectionTime: istioDuration(circuitBreaker.openFor),
      maxEjectionPercent: 100,
    };
  }
  return policy;
}

function consistentHash(hashOn: NonNullable<Upstream['loadBalancer']['hashOn']>): Record<string, unknown> {
  if (hashOn.header) return { httpHeaderName: hashOn.header };
  if (hashOn.cookie) return { httpCookie: { name: hashOn.cookie, ttl: '0s' } };
  return { useSourceIp: true };
}

/** Istio durations are protobuf durations: seconds with an "s" (or ms), no "m" or "h". */
function istioDuration(duration: string): string {
  const ms = durationMs(duration);
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
