/**
 * The part of a live object one field manager owns, read from its managedFields
 * (server-side apply's fieldsV1). A child's cache keeps only what the operator applied, so
 * memory follows what render writes, not the API server's defaults and other writers'
 * fields; a field someone else took over (a hand edit moves ownership to its editor)
 * drops out of the projection, so the comparison with what render wants fails and the
 * operator applies again, as it would on the full object.
 */
import type { KubernetesObject } from '@kubernetes/client-node';

/** fieldsV1: `f:<name>` a field, `k:<json>` a list item by its keys, `v:<json>` a set value, `i:<n>` an index, `.` the item itself. */
export type FieldSet = { [key: string]: FieldSet };

interface ManagedFieldsEntry {
  manager?: string;
  operation?: string;
  subresource?: string;
  fieldsType?: string;
  fieldsV1?: FieldSet;
}

/** The fields `manager` set by Apply on the object itself (not a subresource), merged. */
export function appliedFields(object: KubernetesObject, manager: string): FieldSet | undefined {
  const entries = (object.metadata?.managedFields ?? []) as ManagedFieldsEntry[];
  let merged: FieldSet | undefined;
  for (const entry of entries) {
    if (entry.manager !== manager || entry.operation !== 'Apply' || entry.subresource) continue;
    if (entry.fieldsType !== 'FieldsV1' || !entry.fieldsV1) continue;
    merged = merged ? mergeFields(merged, entry.fieldsV1) : entry.fieldsV1;
  }
  return merged;
}

/** The parts of `value` that `fields` names; a field with no sub-fields is kept whole. */
export function projectFields(value: unknown, fields: FieldSet): unknown {
  const keys = Object.keys(fields).filter((k) => k !== '.');
  if (keys.length === 0) return value;
  if (Array.isArray(value)) return projectList(value, fields);
  if (value === null || typeof value !== 'object') return value;
  const source = value as Record<string, unknown>;
  const projected: Record<string, unknown> = {};
  for (const key of keys) {
    if (!key.startsWith('f:')) continue;
    const name = key.slice(2);
    if (source[name] !== undefined) projected[name] = projectFields(source[name], fields[key] ?? {});
  }
  return projected;
}

/** A list's items that `fields` names (by keys, value or index), in the list's own order. */
function projectList(list: unknown[], fields: FieldSet): unknown[] {
  const matchers: { matches: (item: unknown, index: number) => boolean; fields: FieldSet }[] = [];
  for (const [key, sub] of Object.entries(fields)) {
    if (key.startsWith('k:')) {
      const wanted = JSON.parse(key.slice(2)) as Record<string, unknown>;
      matchers.push({
        matches: (item) =>
          item !== null &&
          typeof item === 'object' &&
          Object.entries(wanted).every(([k, v]) => (item as Record<string, unknown>)[k] === v),
        fields: sub,
      });
    } else if (key.startsWith('v:')) {
      const wanted = JSON.stringify(JSON.parse(key.slice(2)));
      matchers.push({ matches: (item) => JSON.stringify(item) === wanted, fields: sub });
    } else if (key.startsWith('i:')) {
      const wanted = Number(key.slice(2));
      matchers.push({ matches: (_item, index) => index === wanted, fields: sub });
    }
  }
  const projected: unknown[] = [];
  list.forEach((item, index) => {
    const matcher = matchers.find((m) => m.matches(item, index));
    if (matcher) projected.push(projectFields(item, matcher.fields));
  });
  return projected;
}

function mergeFields(a: FieldSet, b: FieldSet): FieldSet {
  const merged: FieldSet = { ...a };
  for (const [key, sub] of Object.entries(b)) merged[key] = merged[key] ? mergeFields(merged[key], sub) : sub;
  return merged;
}
