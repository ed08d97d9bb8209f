/**
 * Sidecar injection as a pure function: a pod (or a pod template) and what the cluster
 * says about its namespace in, a decision out: a JSON patch that adds exactly the sidecar
 * the render gives an AiService's pods (the same `sidecarFor`), or the reason not to, with
 * warnings a person can act on. The admission webhook sends the patch back to the API
 * server; `aimesh inject` applies it to files. Nothing here does I/O.
 */
import {
  DNS_LABEL,
  GROUP_VERSION,
  INJECTED_ANNOTATIONS,
  INJECT_DISABLED,
  INJECT_LABEL,
  SIDECAR_PORTS,
  aiService,
  configuringAnnotations,
  formatErrors,
  parseInjectionAnnotations,
  type AiService,
  type InjectionSettings,
} from '../api/index.js';
import { canonicalCopy } from '../lib/json/index.js';
import { sidecarConfigMapName } from './names.js';
import { consulConnection, type ConsulDefaults } from './consul.js';
import { sidecarConfigFor } from './sidecar-config.js';
import { SIDECAR_CONTAINER, sidecarFor, type SidecarConfigSource } from './workload.js';

/** A pod or a pod template as JSON, read defensively: nothing in it is trusted. */
export interface PodLike {
  metadata?: {
    name?: string;
    generateName?: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec?: {
    containers?: ContainerLike[];
    initContainers?: ContainerLike[];
    volumes?: { name: string }[];
    restartPolicy?: string;
  };
}

export interface ContainerLike {
  name: string;
  ports?: { containerPort?: number; protocol?: string }[];
  env?: { name: string }[];
  volumeMounts?: { name: string; mountPath: string }[];
  readinessProbe?: { httpGet?: { path?: string } };
  restartPolicy?: string;
}

export interface InjectionContext {
  /** The namespace the pod is (or will be) created in. */
  namespace: string;
  /** The cluster's Consul, as the operator was told: the same defaults the render uses. */
  consul?: ConsulDefaults;
  /** The valid AiServices of that namespace: one whose workload selector matches adopts the pod. */
  aiServices: readonly AiService[];
  sidecarImage: string;
  /** Kubernetes 1.29+: the sidecar is an init container with restartPolicy Always. */
  nativeSidecar: boolean;
  /** Names the service when neither annotations nor labels do: the workload's name, offline. */
  fallbackName?: string;
}

/** RFC 6902 `add`: the only operation injection needs, since it never removes or rewrites. */
export interface JsonPatchAdd {
  op: 'add';
  path: string;
  value: unknown;
}

export type InjectionDecision =
  | { inject: true; source: string; patch: JsonPatchAdd[]; warnings: string[] }
  | { inject: false; reason: string; warnings: string[] };

/** Decides whether and how to inject one pod. Pure and idempotent: an injected pod is left as is. */
export function decideInjection(pod: PodLike, context: InjectionContext): InjectionDecision {
  const labels = pod.metadata?.labels ?? {};
  const annotations = pod.metadata?.annotations ?? {};
  const spec = pod.spec ?? {};
  const skip = (reason: string, warnings: string[] = []): InjectionDecision => ({
    inject: false,
    reason,
    warnings,
  });

  if (labels[INJECT_LABEL] === INJECT_DISABLED) return skip(`opted out by label ${INJECT_LABEL}=disabled`);
  if (hasSidecar(pod)) return skip('already has the aimesh sidecar');
  const taken = [...(spec.containers ?? []), ...(spec.initContainers ?? [])].flatMap((c) =>
    (c.ports ?? [])
      .filter((p) => (Object.values(SIDECAR_PORTS) as number[]).includes(p.containerPort ?? 0))
      .map((p) => `container ${c.name} uses port ${p.containerPort}`),
  );
  if (taken.length > 0)
    return skip('a container uses a port the sidecar needs', [
      `not injected: ${taken.join(', ')}, which the aimesh sidecar needs (${Object.values(SIDECAR_PORTS).join(', ')}); move the app to another port`,
    ]);

  const found = sidecarSource(pod, context);
  if ('problems' in found) return skip('its injection settings need fixing', found.problems);
  const { resource, config, source, warnings } = found;
  if (!context.nativeSidecar && (spec.restartPolicy === 'Never' || spec.restartPolicy === 'OnFailure'))
    warnings.push(
      'the cluster is older than Kubernetes 1.29, so the sidecar is a plain container and this run-to-completion pod will not finish while it runs',
    );

  const parts = sidecarFor(resource, {
    sidecarImage: context.sidecarImage,
    config: config.source,
    consul: consulConnection(resource, context.consul),
  });
  // Keys sorted, as cdk8s sorts them in a rendered Deployment: the same sidecar, the same text.
  const container = {
    ...canonicalCopy(parts.container),
    ...(context.nativeSidecar ? { restartPolicy: 'Always' } : {}),
  };
  const added: Record<string, string> = {
    [INJECTED_ANNOTATIONS.injected]: source,
    ...(config.json ? { [INJECTED_ANNOTATIONS.sidecarConfig]: config.json } : {}),
    // The app's own scrape settings win: its metrics must keep being collected.
    ...(annotations['prometheus.io/scrape'] === undefined ? parts.podAnnotations : {}),
  };

  const patch: JsonPatchAdd[] = [];
  if (pod.metadata?.annotations === undefined) {
    if (pod.metadata === undefined) patch.push({ op: 'add', path: '/metadata', value: {} });
    patch.push({ op: 'add', path: '/metadata/annotations', value: added });
  } else {
    for (const [key, value] of Object.entries(added))
      patch.push({ op: 'add', path: `/metadata/annotations/${pointer(key)}`, value });
  }
  (spec.containers ?? []).forEach((app, index) => {
    const env = parts.appEnv((app.env ?? []).map((e) => e.name)).map(canonicalCopy);
    if (env.length > 0) {
      if (app.env === undefined) patch.push({ op: 'add', path: `/spec/containers/${index}/env`, value: env });
      else for (const e of env) patch.push({ op: 'add', path: `/spec/containers/${index}/env/-`, value: e });
    }
    const mounts = parts.appVolumeMounts.map(canonicalCopy);
    if (app.volumeMounts === undefined)
      patch.push({ op: 'add', path: `/spec/containers/${index}/volumeMounts`, value: mounts });
    else
      for (const m of mounts)
        patch.push({ op: 'add', path: `/spec/containers/${index}/volumeMounts/-`, value: m });
  });
  if (context.nativeSidecar) {
    // First among the init containers, so the app's own init containers can use it too.
    if (spec.initContainers === undefined)
      patch.push({ op: 'add', path: '/spec/initContainers', value: [container] });
    else patch.push({ op: 'add', path: '/spec/initContainers/0', value: container });
  } else {
    patch.push({ op: 'add', path: '/spec/containers/-', value: container });
  }
  const volumes = parts.volumes.map(canonicalCopy);
  if (spec.volumes === undefined) patch.push({ op: 'add', path: '/spec/volumes', value: volumes });
  else for (const v of volumes) patch.push({ op: 'add', path: '/spec/volumes/-', value: v });

  return { inject: true, source, patch, warnings };
}

/** True when the pod already runs the aimesh sidecar, as a container or a native sidecar. */
export function hasSidecar(pod: PodLike): boolean {
  const spec = pod.spec ?? {};
  return [...(spec.containers ?? []), ...(spec.initContainers ?? [])].some(
    (c) => c.name === SIDECAR_CONTAINER,
  );
}

/** Applies `add` operations to a copy of the document (what the API server does with the patch). */
export function applyPatch<T>(document: T, patch: readonly JsonPatchAdd[]): T {
  const copy = structuredClone(document) as unknown;
  for (const { path, value } of patch) {
    const keys = path
      .split('/')
      .slice(1)
      .map((k) => k.replaceAll('~1', '/').replaceAll('~0', '~'));
    const last = keys.pop() as string;
    let target = copy as Record<string, unknown>;
    for (const key of keys) target = target[key] as Record<string, unknown>;
    if (Array.isArray(target)) {
      if (last === '-') target.push(structuredClone(value));
      else target.splice(Number(last), 0, structuredClone(value));
    } else {
      target[last] = structuredClone(value);
    }
  }
  return copy as T;
}

/** The AiServices whose workload selector matches these labels. */
export function adoptersOf(labels: Record<string, string>, aiServices: readonly AiService[]): AiService[] {
  return aiServices.filter((resource) => {
    const selector = resource.spec.workload?.selector.matchLabels;
    return selector !== undefined && Object.entries(selector).every(([k, v]) => labels[k] === v);
  });
}

type SidecarSource =
  | {
      resource: AiService;
      config: { source: SidecarConfigSource; json?: string };
      source: string;
      warnings: string[];
    }
  | { problems: string[] };

/** An adopting AiService configures the sidecar; otherwise the pod's annotations do. */
function sidecarSource(pod: PodLike, context: InjectionContext): SidecarSource {
  const labels = pod.metadata?.labels ?? {};
  const adopters = adoptersOf(labels, context.aiServices);
  if (adopters.length > 1)
    return {
      problems: [
        `not injected: AiServices ${adopters.map((a) => a.metadata.name).join(' and ')} all select this pod; make their spec.workload.selector labels pick disjoint pods`,
      ],
    };
  const adopter = adopters[0];
  if (adopter) {
    const ignored = configuringAnnotations(pod.metadata?.annotations);
    return {
      resource: adopter,
      config: { source: { kind: 'configMap', name: sidecarConfigMapName(adopter.metadata.name) } },
      source: `aiservice/${adopter.metadata.name}`,
      warnings:
        ignored.length > 0
          ? [
              `annotations ${ignored.join(', ')} are ignored: AiService ${adopter.metadata.name} configures this pod's sidecar`,
            ]
          : [],
    };
  }

  const parsed = parseInjectionAnnotations(pod.metadata?.annotations);
  if (!parsed.ok) return { problems: parsed.problems.map((p) => `not injected: ${p}`) };
  const resource = resourceFromAnnotations(pod, parsed.settings, context);
  if ('problems' in resource) return resource;
  const config = sidecarConfigFor(
    resource,
    context.namespace,
    [],
    consulConnection(resource, context.consul),
  );
  return {
    resource,
    config: {
      source: { kind: 'podAnnotation', annotation: INJECTED_ANNOTATIONS.sidecarConfig },
      json: JSON.stringify(config),
    },
    source: 'annotations',
    warnings: [],
  };
}

/**
 * The AiService the annotations stand for: the same schema, defaults and rules as a
 * written one, so an annotated pod's sidecar config is exactly what an AiService with
 * these fields would give it.
 */
function resourceFromAnnotations(
  pod: PodLike,
  settings: InjectionSettings,
  context: InjectionContext,
): AiService | { problems: string[] } {
  const name = settings.service ?? defaultServiceName(pod, context.fallbackName);
  if (name === undefined)
    return {
      problems: [
        'not injected: no service name: set annotation aimesh.io/service, or label app.kubernetes.io/name, to a DNS label',
      ],
    };
  const app = pod.spec?.containers?.[0];
  const port =
    settings.appPort ??
    app?.ports?.find((p) => (p.protocol ?? 'TCP') === 'TCP' && p.containerPort)?.containerPort ??
    8080;
  const labels = pod.metadata?.labels ?? {};
  const parsed = aiService.safeParse({
    apiVersion: GROUP_VERSION,
    kind: 'AiService',
    metadata: { name, namespace: context.namespace },
    spec: {
      // Not used to select anything: it marks the resource as one whose pods exist already.
      workload: { selector: { matchLabels: Object.keys(labels).length > 0 ? labels : { app: name } } },
      port,
      ...(settings.appProtocol ? { protocol: settings.appProtocol } : {}),
      healthCheck: { path: settings.healthPath ?? app?.readinessProbe?.httpGet?.path ?? '/healthz' },
      ...(settings.discovery ? { discovery: { mode: settings.discovery } } : {}),
      upstreams: (settings.upstreams ?? []).map((u) => ({
        name: u.name,
        ...(u.strategy ? { loadBalancer: { strategy: u.strategy } } : {}),
      })),
    },
  });
  if (parsed.success) return parsed.data;
  const errors = parsed.error.issues.map((issue) => ({
    field: issue.path.join('.'),
    message: issue.message,
  }));
  return {
    problems: [
      `not injected: the annotations do not make a valid sidecar config (${formatErrors(errors).replaceAll('\n', '; ')}); fix the aimesh.io/ annotations`,
    ],
  };
}

/**
 * The name a pod's app is known by: its app.kubernetes.io/name or app label, else its
 * workload's name (a Deployment's pods are named <deployment>-<pod-template-hash>-<x>).
 */
function defaultServiceName(pod: PodLike, fallbackName: string | undefined): string | undefined {
  const labels = pod.metadata?.labels ?? {};
  const hash = labels['pod-template-hash'];
  let owner = pod.metadata?.generateName?.replace(/-$/, '');
  if (owner && hash && owner.endsWith(`-${hash}`)) owner = owner.slice(0, -hash.length - 1);
  const candidates = [labels['app.kubernetes.io/name'], labels.app, fallbackName, owner, pod.metadata?.name];
  return candidates.find((c): c is string => c !== undefined && c.length <= 63 && DNS_LABEL.test(c));
}

function pointer(key: string): string {
  return key.replaceAll('~', '~0').replaceAll('/', '~1');
}

/**
 * Whether a Kubernetes version runs native sidecars (restartPolicy Always on an init
 * container: beta and on by default since 1.29). Takes `v1.36.3`, `1.28` or `/version`'s
 * gitVersion; anything unreadable counts as a current version.
 */
export function supportsNativeSidecars(version: string): boolean {
  const match = /^v?(\d+)\.(\d+)/.exec(version.trim());
  if (!match) return true;
  const [major, minor] = [Number(match[1]), Number(match[2])];
  return major > 1 || minor >= 29;
}
