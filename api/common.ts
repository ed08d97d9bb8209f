import { z } from 'zod';

export const API_GROUP = 'aimesh.io';
export const API_VERSION = 'v1alpha1';
export const GROUP_VERSION = `${API_GROUP}/${API_VERSION}`;

/**
 * Ports the aimesh sidecar listens on inside every pod. They sit outside the ranges
 * used by Istio's proxy (15000–15090), Dapr (3500–3501, 50001–50002, 9090) and Consul
 * (8300–8302, 8500–8503, 8600), so aimesh can run beside any of them.
 */
export const SIDECAR_PORTS = { outbound: 4700, admin: 4701, control: 4702, controlGrpc: 4703 } as const;
export const ISTIO_RESERVED_PORTS = { first: 15000, last: 15090 } as const;

/**
 * A duration as Kubernetes, Istio and CEL write it: one or more number+unit pairs,
 * e.g. `250ms`, `5s`, `1m30s`, `2h`. The same strings parse in CEL's `duration()`.
 */
export const DURATION_PATTERN = /^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$/;

export interface DurationBounds {
  /** Longest value accepted, e.g. "1h": every wait aimesh makes has an end. */
  max: string;
  /** Shortest value accepted when above 0s, e.g. Consul's 10s floor for session TTLs. */
  min?: string;
  /**
   * What 0s means, for fields where waiting not at all makes sense ("retry at once").
   * Without it, 0s is refused: it never means "no limit".
   */
  zero?: string;
}

/**
 * A duration field with explicit bounds, checked alike by zod and by the API server (CEL).
 * The bounds are added to the description so `kubectl explain` and docs/api.md show them.
 */
export function duration(description: string, bounds: DurationBounds) {
  const floor = bounds.min ?? '0s';
  // A malformed duration is reported by the pattern alone, not again as a CEL conversion error.
  const malformed = `!self.matches(${celString(DURATION_PATTERN.source)})`;
  const rules: CrossFieldRule<string>[] = [
    {
      cel: `${malformed} || duration(self) <= duration('${bounds.max}')`,
      message: `must be at most ${bounds.max}`,
      check: (value) => !DURATION_PATTERN.test(value) || durationMs(value) <= durationMs(bounds.max) || [],
    },
  ];
  if (bounds.zero === undefined || bounds.min !== undefined)
    rules.unshift({
      cel: `${malformed} || ${bounds.zero === undefined ? '' : "duration(self) == duration('0s') || "}duration(self) ${bounds.min ? '>=' : '>'} duration('${floor}')`,
      message: bounds.min
        ? `must be at least ${bounds.min}${bounds.zero === undefined ? '' : ' (or 0s)'}`
        : `must be longer than 0s (0s does not mean "no limit"); write a duration up to ${bounds.max}`,
      check: (value) => {
        if (!DURATION_PATTERN.test(value)) return true;
        const ms = durationMs(value);
        return (
          (bounds.zero !== undefined && ms === 0) ||
          (bounds.min ? ms >= durationMs(bounds.min) : ms > 0) ||
          []
        );
      },
    });
  const range = `${bounds.min ?? (bounds.zero === undefined ? 'more than 0s' : '0s')} to ${bounds.max}`;
  return withRules(
    z
      .string()
      .max(32)
      .regex(DURATION_PATTERN, {
        error: 'must be a duration such as "250ms", "5s", "1m30s" or "2h" (units: ms, s, m, h)',
      })
      .describe(`${description} From ${range}.${bounds.zero === undefined ? '' : ` 0s ${bounds.zero}.`}`),
    rules,
  );
}

/** Milliseconds in a duration string that matched DURATION_PATTERN. */
export function durationMs(value: string): number {
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  for (const [, amount, , unit] of value.matchAll(/([0-9]+(\.[0-9]+)?)(ms|s|m|h)/g)) {
    total += Number(amount) * (units[unit as string] ?? 0);
  }
  return total;
}

/** Marks a schema node so the CRD generator emits `x-kubernetes-int-or-string: true`. */
export const INT_OR_STRING = 'x-aimesh-int-or-string';

const QUANTITY_PATTERN =
  /^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$/;

/** A Kubernetes resource quantity: an integer, or a string such as `500m` or `256Mi`. */
export function quantity(description: string) {
  return z
    .union([
      z.int().min(0),
      z.string().regex(QUANTITY_PATTERN, { error: 'must be a quantity such as "500m", "2" or "256Mi"' }),
    ])
    .meta({ [INT_OR_STRING]: true, pattern: QUANTITY_PATTERN.source })
    .describe(description);
}

/** A DNS-1123 label: what Kubernetes accepts as a Service, ServiceAccount or container name. */
export const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export function dnsLabel(description: string) {
  return z
    .string()
    .min(1)
    .max(63)
    .regex(DNS_LABEL, {
      error:
        'must be a DNS label: lowercase letters, digits and "-", starting and ending with a letter or digit',
    })
    .describe(description);
}

export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;
export const httpMethod = z.enum(HTTP_METHODS);

export const resourceRequirements = z
  .strictObject({
    requests: z
      .strictObject({
        cpu: quantity('CPU requested, e.g. "100m".').optional(),
        memory: quantity('Memory requested, e.g. "128Mi".').optional(),
      })
      .optional()
      .describe('Resources the scheduler reserves for the container.'),
    limits: z
      .strictObject({
        cpu: quantity('CPU limit, e.g. "1".').optional(),
        memory: quantity('Memory limit, e.g. "512Mi".').optional(),
      })
      .optional()
      .describe('Resources the container may not exceed.'),
  })
  .describe('Compute resources, as in a Kubernetes container.');

export const secretKeyRef = z
  .strictObject({
    name: dnsLabel('Name of a Secret in the same namespace.'),
    key: z.string().min(1).max(253).describe('Key within the Secret.'),
  })
  .describe('A key of a Secret in the resource namespace.');

export type SecretKeyRef = z.output<typeof secretKeyRef>;

export const condition = z
  .strictObject({
    type: z
      .string()
      .max(316)
      .describe(
        'Condition type: Ready, Progressing, Degraded, or IstioPolicies (AiServices that ask for mTLS or allowed callers).',
      ),
    status: z.enum(['True', 'False', 'Unknown']).describe('Whether the condition holds.'),
    reason: z.string().max(1024).optional().describe('One CamelCase word saying why.'),
    message: z.string().max(32768).optional().describe('What a person should know, in a sentence.'),
    observedGeneration: z.int().min(0).optional().describe('The generation this condition was set for.'),
    lastTransitionTime: z
      .string()
      .optional()
      .meta({ format: 'date-time' })
      .describe('When the status last changed.'),
  })
  .describe('A status condition, as in metav1.Condition.');

/**
 * A rule across fields that a JSON schema cannot say. It is written once and checked in
 * two places: by zod (for `aimesh validate`, render and the sidecar) and by the API server
 * as a CEL `x-kubernetes-validations` rule. Both report the same message.
 */
export interface CrossFieldRule<T> {
  /** CEL over `self`, true when the value is acceptable. */
  cel: string;
  /** Names the field and says what to do. */
  message: string;
  /** Where the API server reports it, relative to `self`, e.g. `.autoscaling`. */
  fieldPath?: string;
  /**
   * The same rule in TypeScript; returns true, the path of the offending field, or that
   * path with a more precise message than CEL can give (the API server says `message`).
   */
  check: (value: T) => true | (string | number)[] | { path: (string | number)[]; message: string };
}

export function withRules<S extends z.ZodType>(schema: S, rules: CrossFieldRule<z.output<S>>[]) {
  return schema
    .superRefine((value, ctx) => {
      for (const rule of rules) {
        const verdict = rule.check(value as z.output<S>);
        if (verdict === true) continue;
        if (Array.isArray(verdict)) ctx.addIssue({ code: 'custom', message: rule.message, path: verdict });
        else ctx.addIssue({ code: 'custom', message: verdict.message, path: verdict.path });
      }
    })
    .meta({
      'x-kubernetes-validations': rules.map((rule) => ({
        rule: rule.cel,
        message: rule.message,
        ...(rule.fieldPath ? { fieldPath: rule.fieldPath } : {}),
      })),
    });
}

/** Index of the first duplicate `name` in a list, or -1. */
export function firstDuplicateName(items: readonly { name: string }[]): number {
  const seen = new Set<string>();
  return items.findIndex(({ name }) => (seen.has(name) ? true : (seen.add(name), false)));
}

/** The CEL form of "every item's name is unique". */
export function celUniqueNames(list: string): string {
  return `${list}.all(a, ${list}.exists_one(b, b.name == a.name))`;
}

/** A DNS-1123 subdomain: what the API server accepts as the name of most objects. */
export const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** A DNS-1035 label: a Service name (it must start with a letter). */
export const DNS_1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
/** A label or annotation key: an optional DNS-subdomain prefix and "/", then a name. */
const QUALIFIED_NAME =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

/** A label or annotation key as the API server checks it: prefix ≤ 253, name ≤ 63. */
function qualifiedNameProblem(key: string): string | undefined {
  const slash = key.lastIndexOf('/');
  const name = key.slice(slash + 1);
  if (!QUALIFIED_NAME.test(key) || name.length > 63 || slash > 253)
    return `key ${JSON.stringify(key)} must be a name of at most 63 letters, digits, "-", "_" and ".", optionally after a DNS-subdomain prefix and "/"`;
  return undefined;
}

/**
 * Standard object metadata with the API server's own rules, so `aimesh validate` refuses
 * what `kubectl apply` would: `name` is whatever `nameRule` says the kind needs, the
 * namespace is a DNS label, label and annotation keys are qualified names, label values
 * at most 63 characters, annotations at most 256 KiB in all.
 */
export function objectMeta(name: z.ZodString) {
  return z
    .looseObject({
      name,
      namespace: dnsLabel('Namespace of the resource.').optional(),
      labels: z
        .record(z.string(), z.string())
        .superRefine((labels, ctx) => {
          for (const [key, value] of Object.entries(labels)) {
            const problem = qualifiedNameProblem(key);
            if (problem) ctx.addIssue({ code: 'custom', message: problem, path: [key] });
            if (value.length > 63 || !LABEL_VALUE.test(value))
              ctx.addIssue({
                code: 'custom',
                message:
                  'a label value must be at most 63 letters, digits, "-", "_" and ".", starting and ending with a letter or digit',
                path: [key],
              });
          }
        })
        .optional(),
      annotations: z
        .record(z.string(), z.string())
        .superRefine((annotations, ctx) => {
          for (const key of Object.keys(annotations)) {
            const problem = qualifiedNameProblem(key);
            if (problem) ctx.addIssue({ code: 'custom', message: problem, path: [key] });
          }
          const size = Object.entries(annotations).reduce((n, [k, v]) => n + k.length + v.length, 0);
          if (size > 256 * 1024)
            ctx.addIssue({ code: 'custom', message: 'annotations must be at most 256 KiB in all' });
        })
        .optional(),
    })
    .describe('Standard object metadata.');
}

/** A name the API server accepts for a custom resource: a DNS-1123 subdomain. */
const SUBDOMAIN_MESSAGE =
  'must be a DNS-1123 subdomain: at most 253 lowercase letters, digits, "-" and ".", starting and ending with a letter or digit';
export const subdomainName = z
  .string()
  .min(1, { error: SUBDOMAIN_MESSAGE })
  .max(253, { error: SUBDOMAIN_MESSAGE })
  .regex(DNS_SUBDOMAIN, { error: SUBDOMAIN_MESSAGE });

/** A name that also names a Service: a DNS-1035 label. */
export const SERVICE_NAME_MESSAGE =
  'must be at most 63 lowercase letters, digits and "-", starting with a letter and ending with a letter or digit (it names a Service)';
export const serviceName = z
  .string()
  .min(1, { error: SERVICE_NAME_MESSAGE })
  .max(63, { error: SERVICE_NAME_MESSAGE })
  .regex(DNS_1035_LABEL, { error: SERVICE_NAME_MESSAGE });

/** A map with at most `max` entries: the API server needs the bound to cost CEL rules over it. */
export function boundedRecord<K extends z.ZodString, V extends z.ZodType>(key: K, value: V, max: number) {
  return z
    .record(key, value)
    .refine((record) => Object.keys(record).length <= max, { error: `must have at most ${max} entries` })
    .meta({ maxProperties: max });
}

/** An HTTP header name (an RFC 9110 token). */
export const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** A string as a CEL string literal (JSON escapes are CEL escapes). */
export function celString(value: string): string {
  return JSON.stringify(value);
}

/** Most headers one map may set; the API server needs the bound to cost CEL rules. */
export const MAX_HEADERS = 32;

/** A header value with no line break or NUL, which would end the header and start another. */
export function headerValueSchema(description: string, maxLength: number) {
  return withRules(z.string().max(maxLength).describe(description), [
    {
      // contains, not a regex: cheap enough for the API server's CEL cost budget.
      cel: "!self.contains('\\r') && !self.contains('\\n') && !self.contains('\\u0000')",
      message: 'a header value must not hold a line break or NUL',
      check: (value) => !/[\r\n\0]/.test(value) || [],
    },
  ]);
}

/**
 * Headers by name: names are RFC 9110 tokens, and `reserved` names (lowercase) are refused
 * because aimesh sets them itself or they would change where or how the request goes.
 */
export function headerMap(
  description: string,
  value: z.ZodType<string, string>,
  reserved: readonly string[] = [],
  max = MAX_HEADERS,
) {
  const rules: CrossFieldRule<Record<string, string>>[] = [
    {
      cel: `self.all(k, k.matches(${celString(HEADER_NAME.source)}))`,
      message:
        "header names may hold only letters, digits and !#$%&'*+-.^_`|~ (no spaces, colons or line breaks)",
      check: (map) => {
        const bad = Object.keys(map).find((k) => !HEADER_NAME.test(k));
        return bad === undefined || [bad];
      },
    },
  ];
  if (reserved.length > 0)
    rules.push({
      cel: `!self.exists(k, k.lowerAscii() in [${reserved.map(celString).join(', ')}])`,
      message: `headers must not set ${reserved.join(', ')}: aimesh sets them, or they would change where the request goes`,
      check: (map) => {
        const bad = Object.keys(map).find((k) => reserved.includes(k.toLowerCase()));
        return bad === undefined || [bad];
      },
    });
  return withRules(boundedRecord(z.string().min(1).max(256), value, max).describe(description), rules);
}
