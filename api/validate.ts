import { z } from 'zod';
import { aiService, type AiService } from './aiservice.js';
import { GROUP_VERSION } from './common.js';
import { saga, type Saga } from './saga.js';

export type Resource = AiService | Saga;

export interface FieldError {
  /** Where the problem is, as Kubernetes writes it: `spec.steps[1].name`. */
  field: string;
  message: string;
}

export type Validation = { ok: true; resource: Resource } | { ok: false; errors: FieldError[] };

const schemasByKind = { AiService: aiService, Saga: saga } as const;
export const KINDS = Object.keys(schemasByKind) as (keyof typeof schemasByKind)[];

/**
 * Validates one parsed document as an aimesh resource and fills in defaults.
 * Errors name the field and say what to do; nothing is thrown for bad input.
 */
export function validateResource(document: unknown): Validation {
  if (document === null || typeof document !== 'object' || Array.isArray(document)) {
    return fail('', 'a resource must be a YAML or JSON object with apiVersion, kind, metadata and spec');
  }
  const { apiVersion, kind } = document as Record<string, unknown>;
  if (apiVersion !== GROUP_VERSION) {
    return fail('apiVersion', `must be "${GROUP_VERSION}" (got ${JSON.stringify(apiVersion)})`);
  }
  // Own keys only: `kind: constructor` must not find Object's constructor.
  if (typeof kind !== 'string' || !Object.hasOwn(schemasByKind, kind))
    return fail('kind', `must be one of ${KINDS.join(', ')} (got ${JSON.stringify(kind)})`);
  const schema = schemasByKind[kind as keyof typeof schemasByKind];
  const parsed = schema.safeParse(document, { reportInput: true });
  if (parsed.success) return { ok: true, resource: parsed.data };
  return { ok: false, errors: parsed.error.issues.map(toFieldError) };
}

/** One line per error: `spec.replicas: Invalid input: expected int, received string`. */
export function formatErrors(errors: FieldError[]): string {
  return errors.map(({ field, message }) => (field ? `${field}: ${message}` : message)).join('\n');
}

function toFieldError(issue: z.core.$ZodIssue): FieldError {
  return { field: fieldPath(issue.path), message: describeIssue(issue) };
}

function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code === 'unrecognized_keys') {
    return `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}; check the spelling in docs/api.md or with kubectl explain`;
  }
  if (issue.code === 'invalid_value' && issue.values.length > 1) {
    return `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
  }
  if (issue.code === 'invalid_type') {
    return issue.input === undefined
      ? 'is required'
      : `must be ${article(issue.expected)}, not ${JSON.stringify(issue.input)}`;
  }
  return issue.message;
}

export function fieldPath(path: readonly PropertyKey[]): string {
  return path
    .map((segment, i) =>
      typeof segment === 'number' ? `[${segment}]` : `${i === 0 ? '' : '.'}${String(segment)}`,
    )
    .join('');
}

function fail(field: string, message: string): Validation {
  return { ok: false, errors: [{ field, message }] };
}

function article(expected: string): string {
  const names: Record<string, string> = { int: 'an integer', number: 'a number', string: 'a string' };
  return names[expected] ?? `${/^[aeiou]/.test(expected) ? 'an' : 'a'} ${expected}`;
}
