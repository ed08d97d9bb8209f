/**
 * Whether a live object already holds every field we would apply. The API server adds
 * defaults and other managers' fields, so "contains" is the right test, not "equals";
 * a field we own that someone changed by hand makes it false, and we apply again.
 */
export function containsDesired(live: unknown, desired: unknown): boolean {
  if (desired === null || desired === undefined) return live === desired || live === undefined;
  if (Array.isArray(desired)) {
    return (
      Array.isArray(live) &&
      live.length === desired.length &&
      desired.every((item, i) => containsDesired(live[i], item))
    );
  }
  if (typeof desired === 'object') {
    if (live === null || typeof live !== 'object' || Array.isArray(live)) return false;
    const liveObject = live as Record<string, unknown>;
    return Object.entries(desired as Record<string, unknown>).every(([key, value]) =>
      containsDesired(liveObject[key], value),
    );
  }
  // Quantities and int-or-string fields come back as strings: 1 and "1" are the same.
  if (typeof desired !== typeof live) return String(desired) === String(live);
  return desired === live;
}
