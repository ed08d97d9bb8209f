import { sidecarConfig, type AiService, type SidecarConfig } from '../../api/index.js';

/** Where provider API keys are mounted in the sidecar, one folder per provider channel. */
export const PROVIDER_SECRETS_DIR = '/var/run/secrets/aimesh/providers';
export const PROVIDER_KEY_FILE = 'api-key';

/** The sidecar config an AiService implies, validated by the sidecar config schema. Pure. */
export function sidecarConfigFor(resource: AiService, namespace: string): SidecarConfig {
  const { spec, metadata } = resource;
  return sidecarConfig.parse({
    service: {
      name: metadata.name,
      namespace,
      port: spec.port,
      protocol: spec.protocol,
      healthCheck: spec.healthCheck,
    },
    discovery: {
      mode: spec.discovery.mode,
      consul: { ...spec.discovery.consul, serviceName: spec.discovery.consul.serviceName ?? metadata.name },
    },
    upstreams: spec.upstreams,
    providers: spec.providers.map(({ apiKeySecretRef, ...provider }) => ({
      ...provider,
      ...(apiKeySecretRef
        ? { apiKeyFile: `${PROVIDER_SECRETS_DIR}/${provider.name}/${PROVIDER_KEY_FILE}` }
        : {}),
    })),
    ...(spec.aiRouting ? { aiRouting: spec.aiRouting } : {}),
    observability: spec.observability,
  });
}
