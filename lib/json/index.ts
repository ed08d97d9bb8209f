/**
 * JSON with object keys in sorted order at every level, so the same data always gives the
 * same text whatever order its keys arrived in. The API server hands objects back with
 * their keys sorted; a file keeps the author's order. Text rendered from either must match,
 * or a ConfigMap is rewritten (and every sidecar reloads) for nothing.
 */
export function canonicalJson(value: unknown, indent = 2): string {
  return JSON.stringify(value, sortKeys, indent);
}

function sortKeys(_key: string, value: unknown): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  return Object.fromEntries(Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/**
 * A JSON copy of `value` with keys sorted at every level and undefined fields left out: an
 * object exactly as cdk8s renders it (its `ApiObject` sorts keys the same way).
 */
export function canonicalCopy<T>(value: T): T {
  return JSON.parse(JSON.stringify(value, sortKeys)) as T;
}
