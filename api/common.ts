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

export function duration(description: string) {
  return z
    .string()
    .max(32)
    .regex(DURATION_PATTERN, {
      error: 'must be a duration such as "250ms", "5s", "1m30s" or "2h" (units: ms, s, m, h)',
    })
    .describe(description);
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
  /** The same rule in TypeScript; returns the path of the offending field or true. */
  check: (value: T) => true | (string | number)[];
}

export function withRules<S extends z.ZodType>(schema: S, rules: CrossFieldRule<z.output<S>>[]) {
  return schema
    .superRefine((value, ctx) => {
      for (const rule of rules) {
        const verdict = rule.check(value as z.output<S>);
        if (verdict !== true) ctx.addIssue({ code: 'custom', message: rule.message, path: verdict });
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

export const objectMeta = z
  .looseObject({
    name: z.string().min(1).max(63),
    namespace: z.string().max(63).optional(),
    labels: z.record(z.string(), z.string()).optional(),
    annotations: z.record(z.string(), z.string()).optional(),
  })
  .describe('Standard object metadata.');
