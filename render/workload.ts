import type {
  V1Container,
  V1DeploymentSpec,
  V1EnvVar,
  V1ObjectMeta,
  V1PodDisruptionBudgetSpec,
  V1PodSpec,
  V1Probe,
  V1SecurityContext,
  V1ServiceSpec,
  V1Volume,
  V1VolumeMount,
  V2HorizontalPodAutoscalerSpec,
} from '@kubernetes/client-node';
import { ApiObject } from 'cdk8s';
import type { Construct } from 'constructs';
import { SIDECAR_PORTS, durationMs, type AiService } from '../api/index.js';
import { CONSUL_SECRETS_DIR, CONSUL_VOLUME, consulSecretItems, type ConsulConnection } from './consul.js';
import { labelsFor, selectorFor, sidecarConfigMapName } from './names.js';
import {
  CONTROL_TOKEN_DIR,
  CONTROL_TOKEN_FILE,
  PROVIDER_KEY_FILE,
  PROVIDER_SECRETS_DIR,
} from './sidecar-config.js';

export interface WorkloadOptions {
  namespace: string;
  sidecarImage: string;
  sidecarConfigJson: string;
  consul: ConsulConnection;
}

/** The sidecar's container name: how render, injection and miss detection recognise it. */
export const SIDECAR_CONTAINER = 'aimesh-sidecar';
const CONFIG_DIR = '/etc/aimesh';
const CONFIG_FILE = 'sidecar.json';
const CONTROL_TOKEN_VOLUME = 'aimesh-control-token';
const DEFAULT_APP_RESOURCES = { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '512Mi' } };
/**
 * From bench/sidecar-latency.ts (BENCHMARKS.md): a sidecar idles at about 73 MiB and peaks at
 * about 105 MiB at 1000 req/s; a saga orchestrator's idles at about 102 MiB (its sagas run
 * on a second thread). 128Mi covers both, as Istio's default proxy request does.
 */
export const DEFAULT_SIDECAR_RESOURCES = {
  requests: { cpu: '50m', memory: '128Mi' },
  limits: { memory: '256Mi' },
};
/**
 * V8 flags of the sidecar process, chosen from bench/sidecar-latency.ts (BENCHMARKS.md):
 * V8's default young generation grows to 16 MiB semi-spaces (three of them in use), which
 * is most of the sidecar's memory under load while its live data stays a few MiB; 2 MiB
 * semi-spaces keep scavenges as short and the peak far lower.
 */
export const SIDECAR_NODE_OPTIONS = '--max-semi-space-size=2';

/**
 * The sidecar's NODE_OPTIONS for a container memory limit: the old space is capped at three
 * quarters of the limit, so a heap that outgrows it ends in a restart whose log says "heap out
 * of memory" rather than an OOM kill that says nothing, and the rest (young generation, code,
 * the node binary's pages, socket buffers) still fits.
 */
export function sidecarNodeOptions(memoryLimit: string | number | undefined): string {
  const bytes = memoryLimit === undefined ? undefined : quantityBytes(memoryLimit);
  if (bytes === undefined) return SIDECAR_NODE_OPTIONS;
  const oldSpaceMiB = Math.max(32, Math.floor((bytes * 0.75) / 2 ** 20));
  return `${SIDECAR_NODE_OPTIONS} --max-old-space-size=${oldSpaceMiB}`;
}

const QUANTITY_SUFFIX: Record<string, number> = {
  '': 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
};

/** Bytes of a memory quantity such as 256Mi or 1G; undefined for forms a memory limit never takes. */
function quantityBytes(quantity: string | number): number | undefined {
  if (typeof quantity === 'number') return quantity;
  const match = /^(\d+(?:\.\d+)?)([kMGT]i?|Ki)?$/.exec(quantity);
  const factor = match ? QUANTITY_SUFFIX[match[2] ?? ''] : undefined;
  return match && factor !== undefined ? Number(match[1]) * factor : undefined;
}

/**
 * Compute resources as an AiService gives them: a quantity may be a JSON number, which
 * Kubernetes accepts and client-node's types (strings only) do not.
 */
type Quantities = { requests?: Record<string, string | number>; limits?: Record<string, string | number> };

/**
 * The Kubernetes objects are plain JSON in cdk8s `ApiObject`s, typed with client-node's
 * types (imported as types only: nothing of client-node is loaded at run time).
 */
type Container = Omit<V1Container, 'resources'> & { resources?: Quantities };
type DeploymentSpec = Omit<V1DeploymentSpec, 'template'> & {
  template: { metadata?: V1ObjectMeta; spec: Omit<V1PodSpec, 'containers'> & { containers: Container[] } };
};

const RESTRICTED: V1SecurityContext = {
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  runAsNonRoot: true,
  capabilities: { drop: ['ALL'] },
};

/**
 * ServiceAccount, Deployment, Service, sidecar ConfigMap, and HPA / PDB when they apply.
 * An AiService that adopts existing pods (spec.workload) gets only the ConfigMap and the
 * Service: the pods belong to the user's own workload, and the injection webhook adds
 * their sidecar.
 */
export function addWorkload(scope: Construct, resource: AiService, options: WorkloadOptions): void {
  const { name } = resource.metadata;
  const { spec } = resource;
  const metadata = { name, namespace: options.namespace, labels: labelsFor(resource) };
  const sidecar = spec.sidecar.enabled
    ? sidecarFor(resource, {
        sidecarImage: options.sidecarImage,
        config: { kind: 'configMap', name: sidecarConfigMapName(name) },
        consul: options.consul,
      })
    : undefined;
  const ownsPods = spec.workload === undefined;

  if (ownsPods)
    new ApiObject(scope, 'service-account', {
      apiVersion: 'v1',
      kind: 'ServiceAccount',
      metadata,
      automountServiceAccountToken: false,
    });

  if (sidecar) {
    new ApiObject(scope, 'sidecar-config', {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { ...metadata, name: sidecarConfigMapName(name) },
      data: { [CONFIG_FILE]: options.sidecarConfigJson },
    });
  }

  if (ownsPods) {
    const deployment: DeploymentSpec = {
      // With autoscaling the HPA owns the replica count, so it is left out of what we apply.
      ...(spec.autoscaling ? {} : { replicas: spec.replicas ?? 1 }),
      selector: { matchLabels: selectorFor(resource) },
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0 } },
      template: {
        metadata: { labels: labelsFor(resource), annotations: sidecar?.podAnnotations ?? {} },
        spec: {
          serviceAccountName: name,
          automountServiceAccountToken: false,
          securityContext: { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
          containers: [
            appContainer(resource, sidecar),
            // A native sidecar is moved to initContainers on the output (markNativeSidecar).
            ...(sidecar ? [sidecar.container] : []),
          ],
          volumes: [{ name: 'tmp', emptyDir: {} }, ...(sidecar?.volumes ?? [])],
        },
      },
    };
    new ApiObject(scope, 'deployment', {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata,
      spec: deployment,
    });
  }
  const service: V1ServiceSpec = {
    selector: selectorFor(resource),
    ports: [
      {
        name: spec.protocol,
        port: spec.port,
        targetPort: spec.port,
        appProtocol: spec.protocol === 'grpc' ? 'grpc' : 'http',
      },
    ],
  };
  new ApiObject(scope, 'service', { apiVersion: 'v1', kind: 'Service', metadata, spec: service });

  if (ownsPods && spec.autoscaling) {
    const autoscaler: V2HorizontalPodAutoscalerSpec = {
      scaleTargetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name },
      minReplicas: spec.autoscaling.minReplicas,
      maxReplicas: spec.autoscaling.maxReplicas,
      metrics: [
        {
          type: 'Resource',
          resource: {
            name: 'cpu',
            target: { type: 'Utilization', averageUtilization: spec.autoscaling.targetCPUPercent },
          },
        },
      ],
    };
    new ApiObject(scope, 'autoscaler', {
      apiVersion: 'autoscaling/v2',
      kind: 'HorizontalPodAutoscaler',
      metadata,
      spec: autoscaler,
    });
  }

  const leastReplicas = spec.autoscaling?.minReplicas ?? spec.replicas ?? 1;
  if (ownsPods && leastReplicas > 1) {
    const budget: V1PodDisruptionBudgetSpec = {
      maxUnavailable: 1,
      selector: { matchLabels: selectorFor(resource) },
    };
    new ApiObject(scope, 'disruption-budget', {
      apiVersion: 'policy/v1',
      kind: 'PodDisruptionBudget',
      metadata,
      spec: budget,
    });
  }
}

/** Where the sidecar reads its config file from. */
export type SidecarConfigSource =
  /** The ConfigMap the operator renders for an AiService. */
  | { kind: 'configMap'; name: string }
  /** A pod annotation, through the downward API: pods configured by annotations only. */
  | { kind: 'podAnnotation'; annotation: string };

/** Everything a pod needs to run the aimesh sidecar, wherever the pod comes from. */
export interface SidecarParts {
  /** A plain container; a native sidecar is this container in initContainers with restartPolicy Always. */
  container: Container;
  /** The volumes the sidecar mounts; all named aimesh-*, so they cannot collide with the app's. */
  volumes: V1Volume[];
  /** Prometheus scrape annotations for the sidecar's /metrics, when metrics are on. */
  podAnnotations: Record<string, string>;
  /** What an app container needs to find the sidecar, minus what it sets itself. */
  appEnv: (setByApp: readonly string[]) => V1EnvVar[];
  /** What every app container mounts: the saga control API token, read-only. */
  appVolumeMounts: V1VolumeMount[];
}

export interface SidecarOptions {
  sidecarImage: string;
  config: SidecarConfigSource;
  /** Where Consul is and the Secrets to reach it with (render/consul.ts). */
  consul: ConsulConnection;
}

/**
 * The one definition of the sidecar: the Deployment render and the injection webhook (and
 * `aimesh inject`) both build it here, so an injected pod runs exactly the sidecar a
 * rendered one does.
 */
export function sidecarFor(resource: AiService, options: SidecarOptions): SidecarParts {
  const { spec } = resource;
  const outbound = `http://127.0.0.1:${SIDECAR_PORTS.outbound}`;
  return {
    container: sidecarContainer(resource, options.sidecarImage, options.consul),
    volumes: sidecarVolumes(resource, options.config, options.consul),
    podAnnotations: spec.observability.metrics.enabled
      ? {
          'prometheus.io/scrape': 'true',
          'prometheus.io/port': String(SIDECAR_PORTS.admin),
          'prometheus.io/path': '/metrics',
        }
      : {},
    appEnv: (setByApp) =>
      [
        { name: 'AIMESH_OUTBOUND', value: outbound },
        // OpenAI SDKs read OPENAI_BASE_URL: point them at the sidecar's AI route, unless the
        // app sets it itself.
        ...(spec.providers.length > 0 ? [{ name: 'OPENAI_BASE_URL', value: `${outbound}/v1/ai` }] : []),
        { name: 'AIMESH_CONTROL_TOKEN_FILE', value: CONTROL_TOKEN_FILE },
      ].filter((variable) => !setByApp.includes(variable.name)),
    appVolumeMounts: [{ name: CONTROL_TOKEN_VOLUME, mountPath: CONTROL_TOKEN_DIR, readOnly: true }],
  };
}

function appContainer(resource: AiService, sidecar: SidecarParts | undefined): Container {
  const { spec } = resource;
  const probeHandler: Pick<V1Probe, 'httpGet' | 'grpc'> =
    spec.protocol === 'grpc'
      ? { grpc: { port: spec.port } }
      : { httpGet: { path: spec.healthCheck.path, port: spec.port } };
  const timing = {
    periodSeconds: seconds(spec.healthCheck.interval),
    timeoutSeconds: seconds(spec.healthCheck.timeout),
    failureThreshold: spec.healthCheck.failureThreshold,
  };
  return {
    name: 'app',
    image: spec.image ?? '',
    ports: [{ name: spec.protocol, containerPort: spec.port }],
    env: [
      ...spec.env.map((variable) =>
        variable.secretKeyRef
          ? { name: variable.name, valueFrom: { secretKeyRef: variable.secretKeyRef } }
          : { name: variable.name, value: variable.value ?? '' },
      ),
      ...(sidecar?.appEnv(spec.env.map((v) => v.name)) ?? []),
    ],
    resources: spec.resources ?? DEFAULT_APP_RESOURCES,
    readinessProbe: { ...probeHandler, ...timing },
    livenessProbe: { ...probeHandler, ...timing, failureThreshold: timing.failureThreshold * 2 },
    securityContext: RESTRICTED,
    volumeMounts: [{ name: 'tmp', mountPath: '/tmp' }, ...(sidecar?.appVolumeMounts ?? [])],
  };
}

function sidecarContainer(resource: AiService, sidecarImage: string, consul: ConsulConnection): Container {
  const { spec } = resource;
  const sidecarResources = spec.sidecar.resources ?? DEFAULT_SIDECAR_RESOURCES;
  const field = (fieldPath: string) => ({ valueFrom: { fieldRef: { fieldPath } } });
  return {
    name: SIDECAR_CONTAINER,
    image: spec.sidecar.image ?? sidecarImage,
    args: ['sidecar', '--config', `${CONFIG_DIR}/${CONFIG_FILE}`],
    ports: [
      { name: 'aimesh-outbound', containerPort: SIDECAR_PORTS.outbound },
      { name: 'aimesh-admin', containerPort: SIDECAR_PORTS.admin },
      { name: 'aimesh-control', containerPort: SIDECAR_PORTS.control },
      { name: 'aimesh-grpc', containerPort: SIDECAR_PORTS.controlGrpc },
    ],
    env: [
      { name: 'POD_NAME', ...field('metadata.name') },
      { name: 'POD_NAMESPACE', ...field('metadata.namespace') },
      { name: 'POD_IP', ...field('status.podIP') },
      { name: 'HOST_IP', ...field('status.hostIP') },
      { name: 'CONSUL_HTTP_ADDR', value: consul.address },
      { name: 'NODE_OPTIONS', value: sidecarNodeOptions(sidecarResources.limits?.memory) },
    ],
    resources: sidecarResources,
    readinessProbe: {
      httpGet: { path: '/readyz', port: SIDECAR_PORTS.admin },
      periodSeconds: 5,
    },
    livenessProbe: {
      httpGet: { path: '/healthz', port: SIDECAR_PORTS.admin },
      periodSeconds: 10,
    },
    // A node starting many pods at once can take the sidecar tens of seconds to start; the
    // liveness probe must not kill it meanwhile (seen on the one-node test cluster: 20
    // sidecars restarting one another). Up to 60 s to start, then liveness takes over.
    startupProbe: {
      httpGet: { path: '/healthz', port: SIDECAR_PORTS.admin },
      periodSeconds: 2,
      failureThreshold: 30,
    },
    securityContext: RESTRICTED,
    volumeMounts: [
      { name: 'aimesh-config', mountPath: CONFIG_DIR, readOnly: true },
      { name: 'aimesh-tmp', mountPath: '/tmp' },
      { name: CONTROL_TOKEN_VOLUME, mountPath: CONTROL_TOKEN_DIR },
      ...spec.providers
        .filter((p) => p.apiKeySecretRef)
        .map((p) => ({
          name: providerVolume(p.name),
          mountPath: `${PROVIDER_SECRETS_DIR}/${p.name}`,
          readOnly: true,
        })),
      ...(consulSecretItems(consul).length > 0
        ? [{ name: CONSUL_VOLUME, mountPath: CONSUL_SECRETS_DIR, readOnly: true }]
        : []),
    ],
  };
}

function sidecarVolumes(
  resource: AiService,
  config: SidecarConfigSource,
  consul: ConsulConnection,
): V1Volume[] {
  const list: V1Volume[] = [
    config.kind === 'configMap'
      ? { name: 'aimesh-config', configMap: { name: config.name } }
      : {
          name: 'aimesh-config',
          downwardAPI: {
            items: [
              { path: CONFIG_FILE, fieldRef: { fieldPath: `metadata.annotations['${config.annotation}']` } },
            ],
          },
        },
    { name: 'aimesh-tmp', emptyDir: {} },
    // In memory: the token never reaches the node's disk. It lives as long as the pod, so a
    // restarted sidecar container finds the token the app holds.
    { name: CONTROL_TOKEN_VOLUME, emptyDir: { medium: 'Memory', sizeLimit: '1Mi' } },
  ];
  for (const provider of resource.spec.providers) {
    if (!provider.apiKeySecretRef) continue;
    list.push({
      name: providerVolume(provider.name),
      secret: {
        secretName: provider.apiKeySecretRef.name,
        items: [{ key: provider.apiKeySecretRef.key, path: PROVIDER_KEY_FILE }],
      },
    });
  }
  const consulItems = consulSecretItems(consul);
  // One projected volume: the token and the CA may live in different Secrets.
  if (consulItems.length > 0)
    list.push({
      name: CONSUL_VOLUME,
      projected: {
        sources: consulItems.map(({ ref, path }) => ({
          secret: { name: ref.name, items: [{ key: ref.key, path }] },
        })),
      },
    });
  return list;
}

const providerVolume = (provider: string) => `aimesh-provider-${provider}`;

/** Whole seconds for a probe field, at least 1. */
function seconds(duration: string): number {
  return Math.max(1, Math.ceil(durationMs(duration) / 1000));
}

/**
 * Makes the sidecar a native sidecar (an init container with restartPolicy: Always,
 * Kubernetes 1.29+): it starts before the app and keeps running beside it. Done on the
 * rendered output, as injection does on a pod: `sidecarFor` builds one container for both
 * placements. Added after cdk8s sorts the keys, restartPolicy and initContainers come last,
 * as in every render the operator has applied so far.
 */
export function markNativeSidecar(objects: { kind: string; spec?: unknown }[]): void {
  for (const object of objects) {
    if (object.kind !== 'Deployment') continue;
    const pod = (object.spec as { template: { spec: PodSpecJson } }).template.spec;
    const sidecar = pod.containers.find((c) => c.name === SIDECAR_CONTAINER);
    if (!sidecar) continue;
    pod.containers = pod.containers.filter((c) => c !== sidecar);
    pod.initContainers = [...(pod.initContainers ?? []), { ...sidecar, restartPolicy: 'Always' }];
  }
}

type ContainerJson = { name: string; restartPolicy?: string; [field: string]: unknown };
type PodSpecJson = { containers: ContainerJson[]; initContainers?: ContainerJson[] };
