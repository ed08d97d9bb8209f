import { sidecarConfig, type AiService, type Saga, type SidecarConfig } from '../api/index.js';
import { consulConfigFields, consulConnection, type ConsulConnection } from './consul.js';
import { sagasOrchestratedBy, stepServices } from './saga.js';

/** Where provider API keys are mounted in the sidecar, one folder per provider channel. */
export const PROVIDER_SECRETS_DIR = '/var/run/secrets/aimesh/providers';
export const PROVIDER_KEY_FILE = 'api-key';
/**
 * The saga control API token: the sidecar writes a random one at start into an in-memory
 * volume that only the sidecar and the app containers mount. A per-pod token needs no
 * Secret, so neither the operator's RBAC nor a GitOps repository ever holds one.
 */
export const CONTROL_TOKEN_DIR = '/var/run/aimesh/control';
export const CONTROL_TOKEN_FILE = `${CONTROL_TOKEN_DIR}/token`;

/** The sidecar config an AiService implies, validated by the sidecar config schema. Pure. */
export function sidecarConfigFor(
  resource: AiService,
  namespace: string,
  sagas: readonly Saga[] = [],
  consul: ConsulConnection = consulConnection(resource),
): SidecarConfig {
  const { spec, metadata } = resource;
  const orchestrated = sagasOrchestratedBy(metadata.name, sagas);
  // A saga's step calls go out through the sidecar: every step service needs an upstream.
  const declared = new Set(spec.upstreams.map((u) => u.name));
  const stepUpstreams = [...new Set(orchestrated.flatMap(stepServices))]
    .filter((name) => !declared.has(name))
    .map((name) => ({ name }));
  return sidecarConfig.parse({
    service: {
      name: metadata.name,
      namespace,
      port: spec.port,
      protocol: spec.protocol,
      healthCheck: spec.healthCheck,
    },
    edge: spec.sidecar.edge,
    discovery: {
      mode: spec.discovery.mode,
      consul: {
        register: spec.discovery.consul.register,
        tags: spec.discovery.consul.tags,
        meta: spec.discovery.consul.meta,
        serviceName: spec.discovery.consul.serviceName ?? metadata.name,
        ...consulConfigFields(consul),
      },
    },
    upstreams: [...spec.upstreams, ...stepUpstreams],
    providers: spec.providers.map(({ apiKeySecretRef, ...provider }) => ({
      ...provider,
      ...(apiKeySecretRef
        ? { apiKeyFile: `${PROVIDER_SECRETS_DIR}/${provider.name}/${PROVIDER_KEY_FILE}` }
        : {}),
    })),
    ...(spec.aiRouting ? { aiRouting: spec.aiRouting } : {}),
    sagas: orchestrated.map((saga) => ({ name: saga.metadata.name, spec: saga.spec })),
    controlAuth: { tokenFile: CONTROL_TOKEN_FILE, createToken: true },
    observability: spec.observability,
  });
}
