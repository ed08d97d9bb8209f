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
 * Per upstream, a DestinationRule and (when timeouts or retries are set) a VirtualService,
 * both scoped to this workload; a PeerAuthentication; an AuthorizationPolicy when callers
 * are restricted.
 */
/**
 * Whether an AiService asks for something only Istio enforces: mTLS between workloads
 * or a list of allowed callers. Without Istio those are not enforced, and status says so.
 */
export function asksForIstio(resource: AiService): boolean {
  const security = resource.spec.security;
  return security.mtls !== 'DISABLE' || (security.allowedCallers?.length ?? 0) > 0;
}

export function addIstioPolicies(scope: Construct, resource: AiService, options: IstioOptions): void {
  const { name } = resource.metadata;
  const metadata = (objectName: string) => ({
    name: objectName,
    namespace: options.namespace,
    labels: labelsFor(resource),
  });

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
        trafficPolicy: trafficPolicy(upstream),
      },
    });
    if (upstream.timeout || upstream.retries) {
      new ApiObject(scope, `virtual-service-${upstream.name}`, {
        apiVersion: 'networking.istio.io/v1',
        kind: 'VirtualService',
        metadata: metadata(upstreamPolicyName(name, upstream.name)),
        spec: {
          hosts: [host],
          exportTo: ['.'],
          http: [
            {
              match: [{ sourceLabels: selectorFor(resource) }],
              route: [{ destination: { host } }],
              ...(upstream.timeout ? { timeout: istioDuration(upstream.timeout) } : {}),
              ...(upstream.retries ? { retries: retryPolicy(upstream.retries) } : {}),
            },
          ],
        },
      });
    }
  }

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

function trafficPolicy(upstream: Upstream): Record<string, unknown> {
  const { loadBalancer, circuitBreaker, outlierDetection } = upstream;
  const policy: Record<string, unknown> = {
    loadBalancer:
      loadBalancer.strategy === 'consistent-hash'
        ? { consistentHash: consistentHash(loadBalancer.hashOn ?? {}) }
        : { simple: ISTIO_LOAD_BALANCER[loadBalancer.strategy] },
  };
  if (circuitBreaker) {
    const tcp = circuitBreaker.maxConnections ? { maxConnections: circuitBreaker.maxConnections } : undefined;
    const http = {
      ...(circuitBreaker.maxPendingRequests
        ? { http1MaxPendingRequests: circuitBreaker.maxPendingRequests }
        : {}),
      ...(circuitBreaker.maxRequestsPerConnection
        ? { maxRequestsPerConnection: circuitBreaker.maxRequestsPerConnection }
        : {}),
    };
    if (tcp || Object.keys(http).length)
      policy.connectionPool = { ...(tcp ? { tcp } : {}), ...(Object.keys(http).length ? { http } : {}) };
  }
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

function retryPolicy(retries: NonNullable<Upstream['retries']>): Record<string, unknown> {
  return {
    attempts: retries.attempts,
    ...(retries.perTryTimeout ? { perTryTimeout: istioDuration(retries.perTryTimeout) } : {}),
    retryOn: [...retries.retryOn, ...retries.retriableStatusCodes.map(String)].join(','),
  };
}

/** Istio durations are protobuf durations: seconds with an "s" (or ms), no "m" or "h". */
function istioDuration(duration: string): string {
  const ms = durationMs(duration);
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
