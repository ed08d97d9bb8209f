export type { DiscoveredEndpoint, Discovery, UpstreamListener, UpstreamState } from './types.js';
export { ConsulClient, consulClientFor, type ConsulServiceRegistration } from './consul-client.js';
export { ConsulDiscovery, type ConsulDiscoveryOptions } from './consul.js';
export { ConsulRegistration, type RegistrationOptions } from './registration.js';
export { KubernetesDnsDiscovery, type KubernetesDnsOptions } from './kubernetes-dns.js';
export { LocalDiscovery, registerLocally, DEFAULT_LOCAL_REGISTRY } from './local.js';
