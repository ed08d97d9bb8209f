/**
 * The contract of sidecar injection into existing pods: the label that opts a namespace or
 * a pod in (or a pod out), and the pod annotations that configure the sidecar of a pod no
 * AiService adopts. The webhook, `aimesh inject` and the docs all read these from here.
 */
import { z } from 'zod';
import { LOAD_BALANCER_STRATEGIES, type LoadBalancerStrategy } from './aiservice.js';
import { DNS_LABEL, ISTIO_RESERVED_PORTS, SIDECAR_PORTS } from './common.js';

/**
 * `enabled` on a namespace injects every pod in it; on a pod in an unlabelled namespace,
 * that pod. `disabled` on a pod (or a namespace) keeps the sidecar out whatever else says.
 */
export const INJECT_LABEL = 'aimesh.io/inject';
export const INJECT_ENABLED = 'enabled';
export const INJECT_DISABLED = 'disabled';

/** Annotations a user sets on a pod (template) to configure its sidecar without an AiService. */
export const INJECTION_ANNOTATIONS = {
  service: 'aimesh.io/service',
  appPort: 'aimesh.io/app-port',
  appProtocol: 'aimesh.io/app-protocol',
  healthPath: 'aimesh.io/health-path',
  discovery: 'aimesh.io/discovery',
  upstreams: 'aimesh.io/upstreams',
} as const;

/** Annotations the injector writes; users do not set them. */
export const INJECTED_ANNOTATIONS = {
  /** `<source>`: `aiservice/<name>` or `annotations`; says the pod was injected and from what. */
  injected: 'aimesh.io/injected',
  /** The sidecar config of an annotation-configured pod, read by the sidecar through the downward API. */
  sidecarConfig: 'aimesh.io/sidecar-config',
} as const;

const KNOWN_ANNOTATIONS = new Set<string>([
  ...Object.values(INJECTION_ANNOTATIONS),
  ...Object.values(INJECTED_ANNOTATIONS),
]);

/** Strategies an annotation can name: consistent-hash needs hashOn, which only an AiService can say. */
const ANNOTATION_STRATEGIES = LOAD_BALANCER_STRATEGIES.filter((s) => s !== 'consistent-hash');
const RESERVED_PORTS: readonly number[] = Object.values(SIDECAR_PORTS);

const portText = z
  .string()
  .regex(/^[0-9]{1,5}$/, { error: 'must be a port number such as "8080"' })
  .transform(Number)
  .refine((port) => port >= 1 && port <= 65535, { error: 'must be a port number from 1 to 65535' })
  .refine((port) => !RESERVED_PORTS.includes(port), {
    error: `collides with the aimesh sidecar's ports (${RESERVED_PORTS.join(', ')}); the app must listen elsewhere`,
  })
  .refine((port) => port < ISTIO_RESERVED_PORTS.first || port > ISTIO_RESERVED_PORTS.last, {
    error: `is in Istio's reserved range ${ISTIO_RESERVED_PORTS.first}-${ISTIO_RESERVED_PORTS.last}`,
  });

const upstreamList = z
  .string()
  .max(4096)
  .transform((text, ctx) => {
    const upstreams: AnnotatedUpstream[] = [];
    for (const entry of text.split(',').map((e) => e.trim())) {
      if (entry === '') continue;
      const [name = '', strategy, ...rest] = entry.split(':').map((p) => p.trim());
      if (!DNS_LABEL.test(name) || name.length > 63 || rest.length > 0) {
        ctx.addIssue({
          code: 'custom',
          message: `"${entry}" must be <service> or <service>:<strategy>, the service a DNS label`,
        });
        continue;
      }
      if (strategy !== undefined && !(ANNOTATION_STRATEGIES as string[]).includes(strategy)) {
        ctx.addIssue({
          code: 'custom',
          message: `"${entry}": unknown strategy "${strategy}"; use one of ${ANNOTATION_STRATEGIES.join(', ')} (consistent-hash needs an AiService)`,
        });
        continue;
      }
      upstreams.push({ name, ...(strategy ? { strategy: strategy as LoadBalancerStrategy } : {}) });
    }
    const names = upstreams.map((u) => u.name);
    const duplicate = names.find((name, i) => names.indexOf(name) !== i);
    if (duplicate) ctx.addIssue({ code: 'custom', message: `"${duplicate}" is listed twice` });
    return upstreams;
  });

/**
 * The injection annotations of one pod, each optional; defaults are applied by the
 * injector, which knows the pod (its ports, its labels).
 */
export const injectionAnnotations = z.object({
  [INJECTION_ANNOTATIONS.service]: z
    .string()
    .regex(DNS_LABEL, { error: 'must be a DNS label (lowercase letters, digits and "-")' })
    .max(63)
    .optional(),
  [INJECTION_ANNOTATIONS.appPort]: portText.optional(),
  [INJECTION_ANNOTATIONS.appProtocol]: z.enum(['http', 'grpc']).optional(),
  [INJECTION_ANNOTATIONS.healthPath]: z
    .string()
    .max(1024)
    .regex(/^\//, { error: 'must start with "/"' })
    .optional(),
  [INJECTION_ANNOTATIONS.discovery]: z.enum(['consul', 'kubernetes']).optional(),
  [INJECTION_ANNOTATIONS.upstreams]: upstreamList.optional(),
});

export interface AnnotatedUpstream {
  name: string;
  strategy?: LoadBalancerStrategy;
}

/** What the annotations say, every field optional (the injector fills in defaults). */
export interface InjectionSettings {
  service?: string;
  appPort?: number;
  appProtocol?: 'http' | 'grpc';
  healthPath?: string;
  discovery?: 'consul' | 'kubernetes';
  upstreams?: AnnotatedUpstream[];
}

export type InjectionAnnotationsResult =
  { ok: true; settings: InjectionSettings } | { ok: false; problems: string[] };

/**
 * Reads the injection annotations of a pod. Every problem names the annotation and says
 * what to write instead; unknown `aimesh.io/` annotations are problems too, since a
 * misspelt one would otherwise be ignored without a word.
 */
export function parseInjectionAnnotations(
  annotations: Record<string, string> | undefined,
): InjectionAnnotationsResult {
  const ours = Object.fromEntries(
    Object.entries(annotations ?? {}).filter(([key]) => key.startsWith('aimesh.io/')),
  );
  const problems = Object.keys(ours)
    .filter((key) => !KNOWN_ANNOTATIONS.has(key))
    .map(
      (key) =>
        `annotation ${key} is unknown; the injection annotations are ${Object.values(INJECTION_ANNOTATIONS).join(', ')}`,
    );
  const parsed = injectionAnnotations.safeParse(ours);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const key = String(issue.path[0] ?? '');
      problems.push(`annotation ${key}=${JSON.stringify(ours[key])}: ${describe(issue)}`);
    }
  }
  if (problems.length > 0 || !parsed.success) return { ok: false, problems };
  const value = parsed.data;
  const settings: InjectionSettings = {
    service: value[INJECTION_ANNOTATIONS.service],
    appPort: value[INJECTION_ANNOTATIONS.appPort],
    appProtocol: value[INJECTION_ANNOTATIONS.appProtocol],
    healthPath: value[INJECTION_ANNOTATIONS.healthPath],
    discovery: value[INJECTION_ANNOTATIONS.discovery],
    upstreams: value[INJECTION_ANNOTATIONS.upstreams],
  };
  return {
    ok: true,
    settings: Object.fromEntries(
      Object.entries(settings).filter(([, v]) => v !== undefined),
    ) as InjectionSettings,
  };
}

/** The annotations a user set that configure the sidecar (used to warn when an AiService wins). */
export function configuringAnnotations(annotations: Record<string, string> | undefined): string[] {
  const keys: string[] = Object.values(INJECTION_ANNOTATIONS);
  return Object.keys(annotations ?? {}).filter((key) => keys.includes(key));
}

function describe(issue: z.core.$ZodIssue): string {
  if (issue.code === 'invalid_value') return `must be one of ${issue.values.map(String).join(', ')}`;
  return issue.message;
}
