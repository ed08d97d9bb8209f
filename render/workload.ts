import { k8s } from 'cdk8s-plus-27';
import type { Construct } from 'constructs';
import { SIDECAR_PORTS, durationMs, type AiService } from '../api/index.js';
import { labelsFor, selectorFor, sidecarConfigMapName } from './names.js';
import { PROVIDER_KEY_FILE, PROVIDER_SECRETS_DIR } from './sidecar-config.js';

export interface WorkloadOptions {
  namespace: string;
  sidecarImage: string;
  sidecarConfigJson: string;
}

const CONFIG_DIR = '/etc/aimesh';
const CONFIG_FILE = 'sidecar.json';
const DEFAULT_APP_RESOURCES = { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '512Mi' } };
const DEFAULT_SIDECAR_RESOURCES = { requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '256Mi' } };
const RESTRICTED: k8s.SecurityContext = {
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  runAsNonRoot: true,
  capabilities: { drop: ['ALL'] },
};

/** ServiceAccount, Deployment, Service, sidecar ConfigMap, and HPA / PDB when they apply. */
export function addWorkload(scope: Construct, resource: AiService, options: WorkloadOptions): void {
  const { name } = resource.metadata;
  const { spec } = resource;
  const metadata = { name, namespace: options.namespace, labels: labelsFor(resource) };

  new k8s.KubeServiceAccount(scope, 'service-account', { metadata, automountServiceAccountToken: false });

  if (spec.sidecar.enabled) {
    new k8s.KubeConfigMap(scope, 'sidecar-config', {
      metadata: { ...metadata, name: sidecarConfigMapName(name) },
      data: { [CONFIG_FILE]: options.sidecarConfigJson },
    });
  }

  new k8s.KubeDeployment(scope, 'deployment', {
    metadata,
    spec: {
      // With autoscaling the HPA owns the replica count, so it is left out of what we apply.
      ...(spec.autoscaling ? {} : { replicas: spec.replicas ?? 1 }),
      selector: { matchLabels: selectorFor(resource) },
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: k8s.IntOrString.fromNumber(0) } },
      template: {
        metadata: { labels: labelsFor(resource), annotations: podAnnotations(resource) },
        spec: {
          serviceAccountName: name,
          automountServiceAccountToken: false,
          securityContext: { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
          containers: [
            appContainer(resource),
            // A native sidecar is moved to initContainers on the output (markNativeSidecar).
            ...(spec.sidecar.enabled ? [sidecarContainer(resource, options)] : []),
          ],
          volumes: volumes(resource),
        },
      },
    },
  });
  new k8s.KubeService(scope, 'service', {
    metadata,
    spec: {
      selector: selectorFor(resource),
      ports: [
        {
          name: spec.protocol,
          port: spec.port,
          targetPort: k8s.IntOrString.fromNumber(spec.port),
          appProtocol: spec.protocol === 'grpc' ? 'grpc' : 'http',
        },
      ],
    },
  });

  if (spec.autoscaling) {
    new k8s.KubeHorizontalPodAutoscalerV2(scope, 'autoscaler', {
      metadata,
      spec: {
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
      },
    });
  }

  const leastReplicas = spec.autoscaling?.minReplicas ?? spec.replicas ?? 1;
  if (leastReplicas > 1) {
    new k8s.KubePodDisruptionBudget(scope, 'disruption-budget', {
      metadata,
      spec: {
        maxUnavailable: k8s.IntOrString.fromNumber(1),
        selector: { matchLabels: selectorFor(resource) },
      },
    });
  }
}

function podAnnotations(resource: AiService): Record<string, string> {
  const { sidecar, observability } = resource.spec;
  if (!sidecar.enabled || !observability.metrics.enabled) return {};
  return {
    'prometheus.io/scrape': 'true',
    'prometheus.io/port': String(SIDECAR_PORTS.admin),
    'prometheus.io/path': '/metrics',
  };
}

function appContainer(resource: AiService): k8s.Container {
  const { spec } = resource;
  const probeHandler: Pick<k8s.Probe, 'httpGet' | 'grpc'> =
    spec.protocol === 'grpc'
      ? { grpc: { port: spec.port } }
      : { httpGet: { path: spec.healthCheck.path, port: k8s.IntOrString.fromNumber(spec.port) } };
  const timing = {
    periodSeconds: seconds(spec.healthCheck.interval),
    timeoutSeconds: seconds(spec.healthCheck.timeout),
    failureThreshold: spec.healthCheck.failureThreshold,
  };
  return {
    name: 'app',
    image: spec.image,
    ports: [{ name: spec.protocol, containerPort: spec.port }],
    env: [
      ...spec.env.map((variable) =>
        variable.secretKeyRef
          ? { name: variable.name, valueFrom: { secretKeyRef: variable.secretKeyRef } }
          : { name: variable.name, value: variable.value ?? '' },
      ),
      ...(spec.sidecar.enabled
        ? [{ name: 'AIMESH_OUTBOUND', value: `http://127.0.0.1:${SIDECAR_PORTS.outbound}` }]
        : []),
      // OpenAI SDKs read OPENAI_BASE_URL: point them at the sidecar's AI route, unless the
      // app sets it itself.
      ...(spec.sidecar.enabled &&
      spec.providers.length > 0 &&
      !spec.env.some((v) => v.name === 'OPENAI_BASE_URL')
        ? [{ name: 'OPENAI_BASE_URL', value: `http://127.0.0.1:${SIDECAR_PORTS.outbound}/v1/ai` }]
        : []),
    ],
    resources: quantities(spec.resources ?? DEFAULT_APP_RESOURCES),
    readinessProbe: { ...probeHandler, ...timing },
    livenessProbe: { ...probeHandler, ...timing, failureThreshold: timing.failureThreshold * 2 },
    securityContext: RESTRICTED,
    volumeMounts: [{ name: 'tmp', mountPath: '/tmp' }],
  };
}

function sidecarContainer(resource: AiService, options: WorkloadOptions): k8s.Container {
  const { spec } = resource;
  const field = (fieldPath: string) => ({ valueFrom: { fieldRef: { fieldPath } } });
  return {
    name: 'aimesh-sidecar',
    image: spec.sidecar.image ?? options.sidecarImage,
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
      // The Consul agent runs per node (DaemonSet), as in Consul's Helm chart.
      { name: 'CONSUL_HTTP_ADDR', value: '$(HOST_IP):8500' },
    ],
    resources: quantities(spec.sidecar.resources ?? DEFAULT_SIDECAR_RESOURCES),
    readinessProbe: {
      httpGet: { path: '/readyz', port: k8s.IntOrString.fromNumber(SIDECAR_PORTS.admin) },
      periodSeconds: 5,
    },
    livenessProbe: {
      httpGet: { path: '/healthz', port: k8s.IntOrString.fromNumber(SIDECAR_PORTS.admin) },
      periodSeconds: 10,
    },
    securityContext: RESTRICTED,
    volumeMounts: [
      { name: 'aimesh-config', mountPath: CONFIG_DIR, readOnly: true },
      { name: 'tmp', mountPath: '/tmp' },
      ...spec.providers
        .filter((p) => p.apiKeySecretRef)
        .map((p) => ({
          name: `provider-${p.name}`,
          mountPath: `${PROVIDER_SECRETS_DIR}/${p.name}`,
          readOnly: true,
        })),
    ],
  };
}

function volumes(resource: AiService): k8s.Volume[] {
  const { spec, metadata } = resource;
  const list: k8s.Volume[] = [{ name: 'tmp', emptyDir: {} }];
  if (!spec.sidecar.enabled) return list;
  list.push({ name: 'aimesh-config', configMap: { name: sidecarConfigMapName(metadata.name) } });
  for (const provider of spec.providers) {
    if (!provider.apiKeySecretRef) continue;
    list.push({
      name: `provider-${provider.name}`,
      secret: {
        secretName: provider.apiKeySecretRef.name,
        items: [{ key: provider.apiKeySecretRef.key, path: PROVIDER_KEY_FILE }],
      },
    });
  }
  return list;
}

type Quantities = { requests?: Record<string, string | number>; limits?: Record<string, string | number> };

function quantities(resources: Quantities): k8s.ResourceRequirements {
  const convert = (map?: Record<string, string | number>) =>
    map
      ? Object.fromEntries(
          Object.entries(map).map(([k, v]) => [
            k,
            typeof v === 'number' ? k8s.Quantity.fromNumber(v) : k8s.Quantity.fromString(v),
          ]),
        )
      : undefined;
  return { requests: convert(resources.requests), limits: convert(resources.limits) };
}

/** Whole seconds for a probe field, at least 1. */
function seconds(duration: string): number {
  return Math.max(1, Math.ceil(durationMs(duration) / 1000));
}

/**
 * Makes the sidecar a native sidecar (an init container with restartPolicy: Always,
 * Kubernetes 1.29+): it starts before the app and keeps running beside it. Done on the
 * rendered output because cdk8s-plus-27's typed Deployment predates native sidecars and
 * drops fields it does not know; the container itself is rendered with the typed API.
 */
export function markNativeSidecar(objects: { kind: string; spec?: unknown }[]): void {
  for (const object of objects) {
    if (object.kind !== 'Deployment') continue;
    const pod = (object.spec as { template: { spec: PodSpecJson } }).template.spec;
    const sidecar = pod.containers.find((c) => c.name === 'aimesh-sidecar');
    if (!sidecar) continue;
    pod.containers = pod.containers.filter((c) => c !== sidecar);
    pod.initContainers = [...(pod.initContainers ?? []), { ...sidecar, restartPolicy: 'Always' }];
  }
}

type ContainerJson = { name: string; restartPolicy?: string; [field: string]: unknown };
type PodSpecJson = { containers: ContainerJson[]; initContainers?: ContainerJson[] };
