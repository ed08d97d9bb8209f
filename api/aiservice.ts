import { z } from 'zod';
import { podOverrides } from './pod.js';
import { edgeSchema } from './edge.js';
import {
  GROUP_VERSION,
  HTTP_METHODS,
  HEADER_NAME,
  ISTIO_RESERVED_PORTS,
  boundedRecord,
  headerMap,
  headerValueSchema,
  SIDECAR_PORTS,
  celUniqueNames,
  condition,
  dnsLabel,
  duration,
  durationMs,
  firstDuplicateName,
  httpMethod,
  objectMeta,
  resourceRequirements,
  secretKeyRef,
  serviceName,
  withRules,
} from './common.js';

export const LOAD_BALANCER_STRATEGIES = [
  'round-robin',
  'random',
  'weighted-round-robin',
  'least-request',
  'ewma',
  'consistent-hash',
  'priority',
] as const;

export const RETRY_ON = [
  '5xx',
  'gateway-error',
  'reset',
  'connect-failure',
  'refused-stream',
  'retriable-4xx',
  'retriable-status-codes',
  'unavailable',
  'cancelled',
  'deadline-exceeded',
  'resource-exhausted',
] as const;

const port = z.int().min(1).max(65535);

const healthCheck = z
  .strictObject({
    path: z
      .string()
      .max(1024)
      .regex(/^\//, { error: 'must start with "/"' })
      .default('/healthz')
      .describe(
        'HTTP path the app answers with 2xx when healthy (ignored for gRPC, which uses grpc.health.v1).',
      ),
    interval: duration('How often the app is probed.', { max: '5m' }).default('10s'),
    timeout: duration('How long one probe may take.', { max: '1m' }).default('2s'),
    failureThreshold: z
      .int()
      .min(1)
      .max(100)
      .default(3)
      .describe('Failed probes in a row before the app counts as unhealthy.'),
  })
  .describe('How Kubernetes and Consul check that the app is healthy.');

const autoscaling = withRules(
  z
    .strictObject({
      minReplicas: z.int().min(1).max(1000).default(1).describe('Fewest replicas the autoscaler keeps.'),
      maxReplicas: z.int().min(1).max(1000).describe('Most replicas the autoscaler may run.'),
      targetCPUPercent: z
        .int()
        .min(1)
        .max(100)
        .default(80)
        .describe('Average CPU use, as a percentage of requests, the autoscaler aims for.'),
    })
    .describe('Scale the Deployment with a HorizontalPodAutoscaler instead of a fixed replica count.'),
  [
    {
      cel: 'self.minReplicas <= self.maxReplicas',
      message: 'autoscaling.minReplicas must not exceed autoscaling.maxReplicas',
      fieldPath: '.minReplicas',
      check: (a) => a.minReplicas <= a.maxReplicas || ['minReplicas'],
    },
  ],
);

const envVar = withRules(
  z
    .strictObject({
      name: z
        .string()
        .min(1)
        .max(256)
        .regex(/^[A-Za-z_][A-Za-z0-9_.-]*$/, { error: 'must be a valid environment variable name' })
        .describe('Variable name.'),
      value: z.string().max(32768).optional().describe('Literal value.'),
      secretKeyRef: secretKeyRef.optional().describe('Take the value from a Secret key.'),
    })
    .describe('An environment variable for the app container.'),
  [
    {
      cel: '!(has(self.value) && has(self.secretKeyRef))',
      message: 'env: set either value or secretKeyRef, not both',
      check: (e) => !(e.value !== undefined && e.secretKeyRef) || ['secretKeyRef'],
    },
  ],
);

const consulDiscovery = z
  .strictObject({
    register: z.boolean().default(true).describe('Register each replica in Consul while it is ready.'),
    serviceName: dnsLabel('Name to register under; defaults to the AiService name.').optional(),
    tags: z.array(z.string().min(1).max(128)).max(32).default([]).describe('Consul service tags.'),
    meta: boundedRecord(z.string().min(1).max(128), z.string().max(512), 64)
      .default({})
      .describe('Consul service meta, e.g. weight and version (weight feeds weighted balancing).'),
  })
  .describe('Consul registration.');

/**
 * Where Consul is and how to reach it, per AiService; unset fields take the cluster's
 * defaults given to the operator (chart values `consul.*`). Consul as consul-k8s 1.x
 * deploys it (servers, no client agent per node) works as well as node agents.
 */
const consulConnection = consulDiscovery.extend({
  address: z
    .string()
    .max(256)
    .regex(/^(https?:\/\/)?[A-Za-z0-9.-]+(:[0-9]{1,5})?$/, {
      error: 'must be host:port, or http(s)://host:port, of the Consul HTTP API',
    })
    .optional()
    .describe(
      "host:port, or https://host:port, of the Consul HTTP API (a server, or a node's agent). Default: the operator's consul.address, else the agent on the pod's node at $(HOST_IP):8500.",
    ),
  datacenter: dnsLabel(
    'Consul datacenter to register in and discover from; the agent’s own when unset.',
  ).optional(),
  tokenSecretRef: secretKeyRef
    .optional()
    .describe(
      'ACL token from a Secret key, mounted into the sidecar as a file (never an environment variable).',
    ),
  tls: z
    .strictObject({
      caSecretRef: secretKeyRef
        .optional()
        .describe('CA certificate (PEM) that signed the Consul server certificate.'),
      serverName: z.string().max(253).optional().describe('Name to verify in the server certificate (SNI).'),
    })
    .optional()
    .describe('TLS to Consul; implied by an https:// address.'),
  healthCheck: z
    .enum(['ttl', 'app'])
    .default('ttl')
    .describe(
      "ttl: the sidecar checks the app on loopback and reports the result to Consul, so Consul never calls the pod (works under STRICT mTLS and AuthorizationPolicy); app: Consul calls the app's health check itself.",
    ),
});

const discovery = z
  .strictObject({
    mode: z
      .enum(['consul', 'kubernetes'])
      .default('consul')
      .describe('Where the sidecar finds upstream instances: Consul catalog, or Kubernetes Service DNS.'),
    consul: consulConnection.prefault({}),
  })
  .describe('How this service is registered and how its upstreams are found.');

const loadBalancer = withRules(
  z
    .strictObject({
      strategy: z
        .enum(LOAD_BALANCER_STRATEGIES)
        .default('round-robin')
        .describe(
          'round-robin, random, weighted-round-robin (smooth, weights from Consul meta "weight"), least-request (power of two choices), ewma (peak-EWMA latency), consistent-hash (needs hashOn) or priority (groups from meta "priority", weighted within a group).',
        ),
      hashOn: z
        .strictObject({
          header: z
            .string()
            .min(1)
            .max(256)
            .regex(HEADER_NAME, { error: 'must be a header name' })
            .optional()
            .describe('Hash on this request header.'),
          cookie: z.string().min(1).max(256).optional().describe('Hash on this cookie.'),
          sourceIp: z.boolean().optional().describe('Hash on the caller address.'),
        })
        .optional()
        .describe('What consistent-hash hashes on: exactly one of header, cookie or sourceIp.'),
    })
    .describe('How requests are spread over the upstream instances.'),
  [
    {
      cel: "self.strategy != 'consistent-hash' || (has(self.hashOn) && [has(self.hashOn.header), has(self.hashOn.cookie), has(self.hashOn.sourceIp) && self.hashOn.sourceIp].exists_one(x, x))",
      message:
        'loadBalancer.hashOn must set exactly one of header, cookie or sourceIp when strategy is consistent-hash',
      fieldPath: '.hashOn',
      check: (lb) => {
        if (lb.strategy !== 'consistent-hash') return true;
        const chosen = [lb.hashOn?.header, lb.hashOn?.cookie, lb.hashOn?.sourceIp || undefined];
        return chosen.filter((x) => x !== undefined).length === 1 || ['hashOn'];
      },
    },
    {
      cel: "self.strategy == 'consistent-hash' || !has(self.hashOn)",
      message:
        'loadBalancer.hashOn is only used with strategy consistent-hash; remove it or change the strategy',
      fieldPath: '.hashOn',
      check: (lb) => lb.strategy === 'consistent-hash' || lb.hashOn === undefined || ['hashOn'],
    },
  ],
);

/**
 * Request bodies up to this size are kept so a retry can resend them (Envoy's
 * per_request_buffer_limit_bytes plays the same role); larger ones are sent once.
 */
export const DEFAULT_RETRY_BUFFER_BYTES = 64 * 1024;
/** Every request in flight may hold this much: the bound keeps the sidecar's memory finite. */
export const MAX_RETRY_BUFFER_BYTES = 10 * 1024 * 1024;

const retries = withRules(
  z
    .strictObject({
      attempts: z
        .int()
        .min(0)
        .max(10)
        .default(2)
        .describe('Retries after the first try (0 turns retries off).'),
      perTryTimeout: duration('Timeout of each try.', { max: '1h' }).optional(),
      retryOn: z
        .array(z.enum(RETRY_ON))
        .max(RETRY_ON.length)
        .default(['connect-failure', 'refused-stream', 'unavailable', 'cancelled', '5xx'])
        .describe('Conditions that cause a retry, with Envoy/Istio meanings.'),
      retriableStatusCodes: z
        .array(z.int().min(100).max(599))
        .max(32)
        .default([])
        .describe('Status codes retried when retryOn has retriable-status-codes.'),
      backoff: z
        .strictObject({
          initial: duration('Wait before the first retry; doubles on each retry, with jitter.', {
            max: '1m',
            zero: 'retries at once, every time',
          }).default('25ms'),
          max: duration('Longest wait between retries.', { max: '1m' }).default('250ms'),
        })
        .prefault({})
        .describe('Exponential backoff with full jitter.'),
      budget: z
        .strictObject({
          percent: z
            .int()
            .min(0)
            .max(100)
            .default(20)
            .describe('Retries allowed as a percentage of recent requests (a retry budget, as in Linkerd).'),
          minPerSecond: z.int().min(0).max(10000).default(10).describe('Retries always allowed per second.'),
        })
        .prefault({})
        .describe('Caps retries so that they cannot multiply an outage.'),
      retryNonIdempotent: z
        .boolean()
        .default(false)
        .describe(
          'Also retry POST and PATCH requests without an Idempotency-Key header (only when the upstream makes them idempotent).',
        ),
      bufferBytes: z
        .int()
        .min(0)
        .max(MAX_RETRY_BUFFER_BYTES)
        .default(DEFAULT_RETRY_BUFFER_BYTES)
        .describe(
          'Request bodies up to this many bytes are kept in memory so a retry can resend them; a larger body is streamed to the upstream once and never retried (the upstream’s answer, or the failure, goes to the app as it is). 0: no body is kept, so a request with a body is sent once without retrying. At most 10 MiB (10485760), held per request in flight.',
        ),
    })
    .describe(
      'Retry policy. Retried: GET, HEAD, OPTIONS, PUT, DELETE and TRACE, and POST or PATCH with an Idempotency-Key header (or with retryNonIdempotent); a connection refused before anything was sent is retried whatever the method.',
    ),
  [
    {
      cel: 'duration(self.backoff.initial) <= duration(self.backoff.max)',
      message: 'retries.backoff.initial must not exceed retries.backoff.max',
      fieldPath: '.backoff.initial',
      check: (r) => durationMs(r.backoff.initial) <= durationMs(r.backoff.max) || ['backoff', 'initial'],
    },
  ],
);

const circuitBreaker = z
  .strictObject({
    consecutiveFailures: z
      .int()
      .min(1)
      .max(1000)
      .default(5)
      .describe('Failures in a row (5xx, connect errors, timeouts) that open the breaker.'),
    openFor: duration('How long the breaker stays open before letting trial requests through.', {
      max: '1h',
    }).default('60s'),
    halfOpenRequests: z
      .int()
      .min(1)
      .max(100)
      .default(2)
      .describe('Trial requests that must succeed in a row to close the breaker again.'),
    maxConnections: z
      .int()
      .min(1)
      .max(1_000_000)
      .optional()
      .describe('Most connections to the upstream (Istio connectionPool).'),
    maxPendingRequests: z
      .int()
      .min(1)
      .max(1_000_000)
      .optional()
      .describe('Most requests waiting for a connection.'),
    maxRequestsPerConnection: z
      .int()
      .min(1)
      .max(1_000_000)
      .optional()
      .describe('Requests per keep-alive connection before it is recycled.'),
  })
  .describe('Per-upstream circuit breaker and connection limits.');

const outlierDetection = z
  .strictObject({
    consecutive5xx: z
      .int()
      .min(1)
      .max(1000)
      .default(5)
      .describe('5xx responses in a row that eject an instance.'),
    interval: duration('How often ejections are evaluated.', { max: '1h' }).default('10s'),
    baseEjectionTime: duration('Ejection time; grows by this much with each ejection of the same instance.', {
      max: '1h',
    }).default('30s'),
    maxEjectionPercent: z
      .int()
      .min(0)
      .max(100)
      .default(10)
      .describe('Most instances, in percent, ejected at once.'),
  })
  .describe('Per-instance outlier ejection, with Envoy semantics.');

const fallback = withRules(
  z
    .strictObject({
      service: dnsLabel('Send the request to this backup service instead.').optional(),
      response: z
        .strictObject({
          status: z.int().min(100).max(599).default(200).describe('Status code of the static response.'),
          headers: headerMap('Response headers.', headerValueSchema('Header value.', 2048)).default({}),
          body: z.string().max(65536).default('').describe('Response body.'),
        })
        .optional()
        .describe('Answer with this static response.'),
      staleCache: z
        .strictObject({
          maxAge: duration('Oldest cached GET response that may still be served.', { max: '24h' }).default(
            '5m',
          ),
        })
        .optional()
        .describe('Serve the last good response to the same GET request.'),
    })
    .describe('What to do when the upstream cannot answer: exactly one of service, response or staleCache.'),
  [
    {
      cel: '[has(self.service), has(self.response), has(self.staleCache)].exists_one(x, x)',
      message: 'fallback must set exactly one of service, response or staleCache',
      check: (f) => [f.service, f.response, f.staleCache].filter((x) => x !== undefined).length === 1 || [],
    },
  ],
);

const upstream = z
  .strictObject({
    name: dnsLabel('Service name of the upstream (its Consul name or Kubernetes Service).'),
    namespace: dnsLabel('Namespace of the upstream Service; defaults to this resource namespace.').optional(),
    port: port.optional().describe('Port of the upstream; defaults to the port discovery reports.'),
    protocol: z.enum(['http', 'grpc']).default('http').describe('http (HTTP/1.1 keep-alive) or grpc (h2c).'),
    loadBalancer: loadBalancer.prefault({}),
    timeout: duration(
      'Whole-request timeout, retries included; when unset, only retries.perTryTimeout and the caller bound the request.',
      { max: '1h' },
    ).optional(),
    retries: retries.optional(),
    circuitBreaker: circuitBreaker.optional(),
    outlierDetection: outlierDetection.optional(),
    fallback: fallback.optional(),
  })
  .describe('A service this app calls through the sidecar.');

const provider = z
  .strictObject({
    name: dnsLabel('Channel name, unique within the AiService.'),
    baseUrl: z
      .string()
      .max(2048)
      .regex(/^https?:\/\/[^\s/$.?#].[^\s]*$/, { error: 'must be an http:// or https:// URL' })
      .describe('Base URL of the OpenAI-compatible API, e.g. https://api.openai.com/v1.'),
    apiKeySecretRef: secretKeyRef
      .optional()
      .describe('Secret key holding the API key; mounted, never put in env.'),
    priority: z
      .int()
      .min(0)
      .max(1000)
      .default(0)
      .describe('Channels with a higher priority are tried first; lower ones are fallbacks.'),
    weight: z
      .int()
      .min(1)
      .max(1000)
      .default(1)
      .describe('Share of traffic among channels of the same priority.'),
    enabled: z.boolean().default(true).describe('A disabled channel gets no traffic.'),
    models: z
      .array(z.string().min(1).max(256))
      .max(256)
      .default([])
      .describe('Models this channel serves; empty means any.'),
    quota: z
      .strictObject({
        requestsPerMinute: z
          .int()
          .min(1)
          .max(1_000_000)
          .optional()
          .describe('Most requests per minute sent to this channel.'),
        tokensPerMinute: z
          .int()
          .min(1)
          .max(1_000_000_000)
          .optional()
          .describe('Most tokens per minute sent to this channel.'),
      })
      .optional()
      .describe(
        'Per-channel rate quota; a channel over quota is skipped until the minute rolls over. Streamed answers count their tokens when they end.',
      ),
    streamUsage: z
      .boolean()
      .default(true)
      .describe(
        'Ask this channel for the token usage of streamed completions (stream_options.include_usage, as OpenAI takes it). Turn off for a provider that refuses the field: its streams are then charged an estimate of four characters a token.',
      ),
    timeout: duration('Timeout of one call to this channel (a streamed answer included).', {
      max: '1h',
    }).default('60s'),
  })
  .describe('An OpenAI-compatible provider channel.');

const aiRouting = z
  .strictObject({
    cache: z
      .strictObject({
        ttl: duration('How long a cached non-streamed completion is served.', { max: '24h' }).default('300s'),
        maxEntries: z.int().min(1).max(1_000_000).default(1000).describe('Most cached responses (LRU).'),
      })
      .optional()
      .describe('Response cache for identical non-streamed requests.'),
    circuitBreaker: circuitBreaker.optional().describe('Breaker applied to each channel.'),
    cooldown: duration('How long a channel that answered 429 or 5xx is skipped.', {
      max: '1h',
      zero: 'never skips a channel',
    }).default('30s'),
  })
  .describe('Policy for routing AI calls across the provider channels.');

const allowedCaller = z
  .strictObject({
    serviceAccount: dnsLabel('ServiceAccount of the caller.'),
    namespace: dnsLabel('Namespace of the caller; defaults to this resource namespace.').optional(),
    methods: z
      .array(httpMethod)
      .max(HTTP_METHODS.length)
      .default([])
      .describe('Allowed HTTP methods; empty means any.'),
    paths: z
      .array(z.string().min(1).max(1024).regex(/^\//, { error: 'must start with "/"' }))
      .max(64)
      .default([])
      .describe('Allowed paths (Istio syntax: exact, prefix "/x/*" or suffix "*/x"); empty means any.'),
  })
  .describe('A caller allowed in by the AuthorizationPolicy.');

const security = withRules(
  z
    .strictObject({
      mtls: z
        .enum(['STRICT', 'PERMISSIVE', 'DISABLE'])
        .default('STRICT')
        .describe('Istio PeerAuthentication mode for this workload.'),
      allowedCallers: z
        .array(allowedCaller)
        .max(128)
        .optional()
        .describe(
          'When set, only these callers are allowed (an Istio ALLOW AuthorizationPolicy); [] denies all.',
        ),
    })
    .describe('Transport security and who may call this service.'),
  [
    {
      cel: "self.mtls != 'DISABLE' || !has(self.allowedCallers)",
      message:
        'security.allowedCallers needs caller identities from mTLS; set security.mtls to STRICT or PERMISSIVE',
      fieldPath: '.allowedCallers',
      check: (s) => s.mtls !== 'DISABLE' || s.allowedCallers === undefined || ['allowedCallers'],
    },
  ],
);

const sidecar = z
  .strictObject({
    enabled: z.boolean().default(true).describe('Run the aimesh sidecar beside the app.'),
    image: z
      .string()
      .min(1)
      .max(512)
      .optional()
      .describe('Sidecar image; defaults to the operator’s own version.'),
    resources: resourceRequirements
      .optional()
      .describe(
        "The sidecar container's compute resources; default requests 50m CPU and 128Mi, limit 256Mi (from bench/sidecar-latency.ts: about 73 MiB idle and 105 MiB at 1000 req/s; a saga orchestrator's sidecar runs its sagas on a second thread and idles at about 102 MiB). The sidecar's V8 heap is capped at three quarters of the memory limit.",
      ),
    native: z
      .boolean()
      .default(false)
      .describe('Run as a native sidecar (init container with restartPolicy Always, Kubernetes 1.29+).'),
    // The proxy's client-side edge (api/edge.ts), kept in its own block.
    edge: edgeSchema.prefault({}),
  })
  .describe('The aimesh sidecar.');

const observability = z
  .strictObject({
    metrics: z
      .strictObject({
        enabled: z
          .boolean()
          .default(true)
          .describe('Expose /metrics and annotate the pod for Prometheus scraping.'),
      })
      .prefault({}),
    tracing: z
      .strictObject({
        endpoint: z
          .string()
          .max(2048)
          .regex(/^https?:\/\/\S+$/, { error: 'must be an http:// or https:// URL' })
          .describe('OTLP/HTTP endpoint traces are exported to.'),
        sampleRatio: z.number().min(0).max(1).default(0.01).describe('Share of new traces sampled, 0 to 1.'),
      })
      .optional()
      .describe('OpenTelemetry tracing; off unless an endpoint is set.'),
  })
  .describe('Metrics and tracing.');

const RESERVED_PORTS = Object.values(SIDECAR_PORTS);

/**
 * Adoption: the AiService configures the sidecar of pods something else runs (a Deployment,
 * StatefulSet or Job of the user's own), found by labels. The operator then renders the
 * Service, the sidecar ConfigMap and the Istio policies, and the injection webhook gives
 * those pods the sidecar. matchLabels only, because a Service selector can say no more.
 */
const workload = z
  .strictObject({
    selector: z
      .strictObject({
        matchLabels: z
          .record(z.string().min(1).max(317), z.string().max(63))
          .refine((labels) => Object.keys(labels).length > 0, { error: 'must name at least one label' })
          .meta({ minProperties: 1, maxProperties: 32 })
          .describe('Labels every adopted pod carries.'),
      })
      .describe('Which existing pods this AiService adopts.'),
  })
  .describe(
    'Adopt existing pods instead of running the app: the operator renders no Deployment and the injection webhook adds the sidecar to the selected pods.',
  );

export const aiServiceSpec = withRules(
  z
    .strictObject({
      image: z
        .string()
        .min(1)
        .max(512)
        .optional()
        .describe('Container image of the app (required unless workload adopts existing pods).'),
      workload: workload.optional(),
      replicas: z
        .int()
        .min(0)
        .max(1000)
        .optional()
        .describe('Fixed replica count (default 1); or use autoscaling.'),
      autoscaling: autoscaling.optional(),
      port: port.default(8080).describe('Port the app listens on.'),
      protocol: z.enum(['http', 'grpc']).default('http').describe('What the app speaks on its port.'),
      env: z.array(envVar).max(256).default([]).describe('Environment variables of the app container.'),
      resources: resourceRequirements.optional(),
      healthCheck: healthCheck.prefault({}),
      discovery: discovery.prefault({}),
      upstreams: z
        .array(upstream)
        .max(64)
        .default([])
        .describe('Services this app calls through the sidecar.'),
      providers: z
        .array(provider)
        .max(64)
        .default([])
        .describe('OpenAI-compatible provider channels for AI calls.'),
      aiRouting: aiRouting.optional(),
      security: security.prefault({}),
      sidecar: sidecar.prefault({}),
      observability: observability.prefault({}),
      pod: podOverrides.optional(),
    })
    .describe('Desired state of an AiService.'),
  [
    {
      cel: '!(has(self.replicas) && has(self.autoscaling))',
      message: 'set either replicas or autoscaling, not both',
      fieldPath: '.replicas',
      check: (s) => !(s.replicas !== undefined && s.autoscaling) || ['replicas'],
    },
    {
      cel: `!self.sidecar.enabled || !(self.port in [${RESERVED_PORTS.join(', ')}])`,
      message: `port collides with the aimesh sidecar's ports (${RESERVED_PORTS.join(', ')}); choose another port`,
      fieldPath: '.port',
      check: (s) => !s.sidecar.enabled || !RESERVED_PORTS.includes(s.port as never) || ['port'],
    },
    {
      cel: `self.port < ${ISTIO_RESERVED_PORTS.first} || self.port > ${ISTIO_RESERVED_PORTS.last}`,
      message: `port is in Istio's reserved range ${ISTIO_RESERVED_PORTS.first}-${ISTIO_RESERVED_PORTS.last}; choose another port`,
      fieldPath: '.port',
      check: (s) => s.port < ISTIO_RESERVED_PORTS.first || s.port > ISTIO_RESERVED_PORTS.last || ['port'],
    },
    {
      cel: celUniqueNames('self.upstreams'),
      message: 'upstreams must have unique names',
      fieldPath: '.upstreams',
      check: (s) => uniqueNames(s.upstreams, 'upstreams'),
    },
    {
      cel: celUniqueNames('self.providers'),
      message: 'providers must have unique names',
      fieldPath: '.providers',
      check: (s) => uniqueNames(s.providers, 'providers'),
    },
    {
      cel: 'self.env.all(a, self.env.exists_one(b, b.name == a.name))',
      message: 'env must not set the same variable twice',
      fieldPath: '.env',
      check: (s) => uniqueNames(s.env, 'env'),
    },
    {
      cel: 'has(self.image) || has(self.workload)',
      message: 'image is required: set the app image, or workload.selector to adopt existing pods',
      fieldPath: '.image',
      check: (s) => s.image !== undefined || s.workload !== undefined || ['image'],
    },
    {
      cel: '!has(self.workload) || !(has(self.image) || has(self.replicas) || has(self.autoscaling) || has(self.resources) || size(self.env) > 0)',
      message:
        'workload adopts existing pods, whose own workload sets their image, replicas, autoscaling, resources and env; remove those fields',
      fieldPath: '.workload',
      check: (s) =>
        s.workload === undefined ||
        !(s.image ?? s.replicas ?? s.autoscaling ?? s.resources ?? (s.env.length > 0 || undefined)) || [
          'workload',
        ],
    },
    {
      cel: '!has(self.workload) || self.sidecar.enabled',
      message: 'workload adopts pods only to give them the sidecar; remove sidecar.enabled: false',
      fieldPath: '.sidecar.enabled',
      check: (s) => s.workload === undefined || s.sidecar.enabled || ['sidecar', 'enabled'],
    },
  ],
);

function uniqueNames(items: readonly { name: string }[], field: string): true | (string | number)[] {
  const duplicate = firstDuplicateName(items);
  return duplicate === -1 || [field, duplicate, 'name'];
}

export const aiServiceStatus = z
  .strictObject({
    observedGeneration: z.int().min(0).optional().describe('The spec generation the status describes.'),
    conditions: z.array(condition).max(16).optional().describe('Ready, Progressing and Degraded.'),
    replicas: z.int().min(0).optional().describe('Replicas of the Deployment.'),
    readyReplicas: z.int().min(0).optional().describe('Replicas that are ready.'),
  })
  .describe('Observed state of an AiService, written by the operator.');

export const aiService = z
  .strictObject({
    apiVersion: z.literal(GROUP_VERSION),
    kind: z.literal('AiService'),
    metadata: objectMeta(serviceName),
    spec: aiServiceSpec,
    status: aiServiceStatus.optional(),
  })
  .describe(
    'An AI-backed microservice: its workload, how it is discovered, the upstreams and AI providers it calls, and who may call it.',
  );

export type AiService = z.output<typeof aiService>;
export type AiServiceInput = z.input<typeof aiService>;
export type AiServiceSpec = z.output<typeof aiServiceSpec>;
export type AiServiceStatus = z.output<typeof aiServiceStatus>;
export type Upstream = z.output<typeof upstream>;
export type AdoptedWorkload = z.output<typeof workload>;
export type Provider = z.output<typeof provider>;
export type LoadBalancerStrategy = (typeof LOAD_BALANCER_STRATEGIES)[number];
export type RetryOn = (typeof RETRY_ON)[number];
export {
  upstream as upstreamSchema,
  provider as providerSchema,
  aiRouting as aiRoutingSchema,
  healthCheck as healthCheckSchema,
  observability as observabilitySchema,
  consulDiscovery as consulDiscoverySchema,
};
