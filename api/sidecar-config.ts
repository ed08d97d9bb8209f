import { z } from 'zod';
import {
  aiRoutingSchema,
  consulDiscoverySchema,
  healthCheckSchema,
  observabilitySchema,
  providerSchema,
  upstreamSchema,
} from './aiservice.js';
import { SIDECAR_PORTS, dnsLabel, duration, subdomainName } from './common.js';
import { edgeSchema } from './edge.js';
import { sagaSpec } from './saga.js';

/**
 * What one sidecar needs to run, as the operator writes it into a ConfigMap (and as
 * `aimesh run` builds it on one machine). The sidecar validates it on start and on every
 * hot reload, and keeps the last good config when a new one is invalid.
 */
export const sidecarConfig = z
  .strictObject({
    service: z
      .strictObject({
        name: dnsLabel('Name of the app this sidecar serves.'),
        namespace: dnsLabel('Namespace of the app.').default('default'),
        port: z.int().min(1).max(65535).describe('Port the app listens on.'),
        protocol: z.enum(['http', 'grpc']).default('http'),
        healthCheck: healthCheckSchema.prefault({}),
      })
      .describe('The local app.'),
    listen: z
      .strictObject({
        address: z
          .string()
          .max(256)
          .default('127.0.0.1')
          .describe('Address the sidecar listens on (loopback in a pod).'),
        outbound: z.int().min(1).max(65535).default(SIDECAR_PORTS.outbound).describe('Outbound proxy port.'),
        admin: z
          .int()
          .min(1)
          .max(65535)
          .default(SIDECAR_PORTS.admin)
          .describe('/metrics, /healthz, /readyz, admin.'),
        control: z
          .int()
          .min(1)
          .max(65535)
          .default(SIDECAR_PORTS.control)
          .describe('Saga control API (HTTP JSON).'),
        controlGrpc: z
          .int()
          .min(1)
          .max(65535)
          .default(SIDECAR_PORTS.controlGrpc)
          .describe('Saga control API (gRPC).'),
      })
      .prefault({}),
    controlAuth: z
      .strictObject({
        tokenFile: z
          .string()
          .max(4096)
          .optional()
          .describe(
            'File holding the bearer token every saga control API call (HTTP and gRPC) must present as `Authorization: Bearer <token>`; re-read when it changes. Unset: the control API accepts any caller that reaches it.',
          ),
        createToken: z
          .boolean()
          .default(false)
          .describe(
            'When tokenFile does not exist, the sidecar writes a new random token to it at start (the rendered pod: an in-memory volume shared with the app container). When false, a missing file stops the sidecar from starting.',
          ),
      })
      .refine((auth) => !auth.createToken || auth.tokenFile !== undefined, {
        message: 'createToken needs tokenFile: the path to write the token to',
        path: ['createToken'],
      })
      .prefault({})
      .describe('Authentication of the saga control API.'),
    edge: edgeSchema.prefault({}),
    discovery: z
      .strictObject({
        mode: z.enum(['consul', 'kubernetes', 'local']).default('consul'),
        consul: consulDiscoverySchema
          .extend({
            address: z
              .string()
              .max(256)
              .default('127.0.0.1:8500')
              .describe('host:port of the Consul agent HTTP API.'),
            deregisterCriticalAfter: duration('Consul removes an instance critical for this long.', {
              min: '1m',
              max: '24h',
            }).default('1m'),
            datacenter: z
              .string()
              .max(63)
              .optional()
              .describe('Consul datacenter; the agent’s own when unset.'),
            tokenFile: z
              .string()
              .max(4096)
              .optional()
              .describe('File holding the ACL token (re-read when it changes).'),
            caFile: z
              .string()
              .max(4096)
              .optional()
              .describe('PEM CA to verify an https:// Consul address with.'),
            tlsServerName: z
              .string()
              .max(253)
              .optional()
              .describe('Name to verify in the Consul certificate.'),
            check: z
              .enum(['ttl', 'app'])
              .default('app')
              .describe('ttl: the sidecar reports the app’s health; app: Consul calls the app.'),
          })
          .prefault({}),
        kubernetes: z
          .strictObject({ clusterDomain: z.string().max(253).default('cluster.local') })
          .prefault({})
          .describe('Kubernetes Service DNS mode.'),
      })
      .prefault({}),
    upstreams: z.array(upstreamSchema).max(64).default([]),
    providers: z
      .array(
        providerSchema.omit({ apiKeySecretRef: true }).extend({
          apiKeyFile: z
            .string()
            .max(4096)
            .optional()
            .describe('File holding the API key (a mounted Secret).'),
        }),
      )
      .max(64)
      .default([]),
    aiRouting: aiRoutingSchema.optional(),
    sagas: z
      .array(z.strictObject({ name: subdomainName.describe('Saga name.'), spec: sagaSpec }))
      .max(256)
      .default([])
      .describe('Sagas this sidecar orchestrates (the operator copies them from Saga resources).'),
    sagaStore: z
      .strictObject({
        kind: z
          .enum(['file', 'consul'])
          .default('consul')
          .describe(
            'file: an append-only log on local disk with group commit, one orchestrator; consul: Consul KV with check-and-set, transactions and session locks.',
          ),
        path: z.string().max(4096).default('/var/lib/aimesh/sagas').describe('Folder of the file store.'),
        prefix: z.string().max(256).default('aimesh/sagas').describe('KV prefix of the Consul store.'),
        sessionTtl: duration(
          "How long a dead orchestrator holds its executions before a peer takes them (Consul session TTL; Consul waits up to twice this). Consul refuses a TTL under its servers' session_ttl_min (10s unless configured): lower that setting on the servers to use a shorter TTL here.",
          { min: '1s', max: '24h' },
        ).default('10s'),
      })
      .prefault({})
      .describe('Where saga executions are kept.'),
    observability: observabilitySchema.prefault({}),
  })
  .describe('Configuration of one aimesh sidecar.');

export type SidecarConfig = z.output<typeof sidecarConfig>;
export type SidecarConfigInput = z.input<typeof sidecarConfig>;
