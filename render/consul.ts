/**
 * Where each sidecar finds Consul and how it authenticates: the AiService's
 * spec.discovery.consul, over the cluster's defaults given to the operator, over the
 * node-local agent that older Consul installs run. The ACL token and the CA come from
 * Secrets mounted as files into the sidecar only (never environment variables, which
 * `kubectl describe` and crash dumps show). Pure.
 */
import type { AiService, SecretKeyRef } from '../api/index.js';

/** The cluster's Consul, as the operator was told (chart values `consul.*`). */
export interface ConsulDefaults {
  address?: string;
  datacenter?: string;
  /** A Secret of this name and key in each AiService's namespace holds the ACL token. */
  tokenSecretRef?: SecretKeyRef;
  caSecretRef?: SecretKeyRef;
  serverName?: string;
}

export const CONSUL_SECRETS_DIR = '/var/run/secrets/aimesh/consul';
/** consul-k8s 0.x and plain DaemonSet installs run an agent on every node. */
const NODE_AGENT = '$(HOST_IP):8500';

export interface ConsulConnection {
  address: string;
  datacenter?: string;
  tokenSecretRef?: SecretKeyRef;
  caSecretRef?: SecretKeyRef;
  serverName?: string;
  check: 'ttl' | 'app';
}

export function consulConnection(resource: AiService, defaults: ConsulDefaults = {}): ConsulConnection {
  const consul = resource.spec.discovery.consul;
  const datacenter = consul.datacenter ?? defaults.datacenter;
  const tokenSecretRef = consul.tokenSecretRef ?? defaults.tokenSecretRef;
  const caSecretRef = consul.tls?.caSecretRef ?? defaults.caSecretRef;
  const serverName = consul.tls?.serverName ?? defaults.serverName;
  return {
    address: consul.address ?? defaults.address ?? NODE_AGENT,
    ...(datacenter ? { datacenter } : {}),
    ...(tokenSecretRef ? { tokenSecretRef } : {}),
    ...(caSecretRef ? { caSecretRef } : {}),
    ...(serverName ? { serverName } : {}),
    check: consul.healthCheck,
  };
}

/** The sidecar config's view: files, not Secret references. */
export function consulConfigFields(connection: ConsulConnection): Record<string, unknown> {
  return {
    ...(connection.datacenter ? { datacenter: connection.datacenter } : {}),
    ...(connection.tokenSecretRef ? { tokenFile: `${CONSUL_SECRETS_DIR}/token` } : {}),
    ...(connection.caSecretRef ? { caFile: `${CONSUL_SECRETS_DIR}/ca.crt` } : {}),
    ...(connection.serverName ? { tlsServerName: connection.serverName } : {}),
    check: connection.check,
  };
}

export const CONSUL_VOLUME = 'aimesh-consul';

/** The Secret keys the sidecar mounts under CONSUL_SECRETS_DIR, and the file each becomes. */
export function consulSecretItems(connection: ConsulConnection): { ref: SecretKeyRef; path: string }[] {
  return [
    ...(connection.tokenSecretRef ? [{ ref: connection.tokenSecretRef, path: 'token' }] : []),
    ...(connection.caSecretRef ? [{ ref: connection.caSecretRef, path: 'ca.crt' }] : []),
  ];
}
