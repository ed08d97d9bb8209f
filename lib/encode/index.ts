/**
 * The one way a value from a request or a resource gets into a URL, a header, or a key:
 * each function encodes for exactly one place, once. Values that cannot be made safe for
 * their place (a `..` path segment, a header with a line break) are refused with an
 * error that says which value and why, never silently altered.
 */
import { AimeshError } from '../errors/index.js';

/**
 * One URL path segment: percent-encoded so `/`, `?`, `#` and `%` stay data. `.` and `..`
 * are refused (they would re-target the call once a server normalizes the path), and so is
 * the empty segment.
 */
export function pathSegment(value: string | number | boolean, what = 'path segment'): string {
  const text = String(value);
  if (text === '' || text === '.' || text === '..')
    throw new AimeshError('input.invalid', `${what} ${JSON.stringify(text)} cannot be a URL path segment`);
  return encodeURIComponent(text);
}

/** A query parameter's name or value. */
export function queryValue(value: string | number | boolean): string {
  return encodeURIComponent(String(value));
}

/** A header value: refused when it holds CR, LF or NUL (header injection), kept as is otherwise. */
export function headerValue(value: string | number | boolean, what = 'header value'): string {
  const text = String(value);
  if (/[\r\n\0]/.test(text))
    throw new AimeshError(
      'input.invalid',
      `${what} contains a line break or NUL, which a header cannot carry`,
    );
  return text;
}

/**
 * One segment of a store key or a file name (Consul KV, the embedded store's files):
 * percent-encoded, so `/` cannot open a new level and `..` cannot climb out.
 */
export function keySegment(value: string, what = 'key'): string {
  if (value === '' || value === '.' || value === '..')
    throw new AimeshError('input.invalid', `${what} ${JSON.stringify(value)} cannot be a key segment`);
  return encodeURIComponent(value).replaceAll('.', '%2E');
}

/**
 * Splits a caller's path (already URL-encoded, as it arrived) into decoded segments,
 * refusing any that would climb (`..`, `%2e%2e`) or stay in place (`.`), so the path can be
 * rebuilt under a base with `pathUnder`.
 */
export function decodePath(rawPath: string, what = 'path'): string[] {
  const [path] = rawPath.split(/[?#]/, 1) as [string];
  const segments = path.split('/').filter((s) => s !== '');
  return segments.map((segment) => {
    let decoded: string;
    try {
      decoded = decodeURIComponent(segment);
    } catch {
      throw new AimeshError(
        'input.invalid',
        `${what} has a malformed percent-encoding in ${JSON.stringify(segment)}`,
      );
    }
    if (decoded === '.' || decoded === '..' || decoded.includes('/') || decoded.includes('\\'))
      throw new AimeshError(
        'input.invalid',
        `${what} segment ${JSON.stringify(segment)} would leave the base path`,
      );
    return decoded;
  });
}

/**
 * A URL under `base` (its origin and path prefix kept) with these decoded segments and
 * query parameters, each encoded once. The result never leaves the base: segments are
 * encoded whole, so none of them can add a level, climb, or start a query.
 */
export function pathUnder(
  base: string | URL,
  segments: readonly (string | number)[],
  query?: URLSearchParams | Record<string, string>,
): URL {
  const url = new URL(String(base));
  const prefix = url.pathname.replace(/\/+$/, '');
  url.pathname = `${prefix}/${segments.map((s) => pathSegment(s)).join('/')}`;
  url.search = query ? new URLSearchParams(query).toString() : '';
  url.hash = '';
  return url;
}
