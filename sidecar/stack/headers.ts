/** Which headers cross the sidecar: end-to-end ones only (RFC 9110 §7.6.1). */
import type { IncomingHttpHeaders } from 'node:http';
import type { Headers } from './types.js';

/** Hop-by-hop headers and the ones only the connection's own ends may set. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
  'http2-settings',
]);

/**
 * The end-to-end headers of a message: without hop-by-hop headers, without the ones its
 * `Connection` header names (they are for this hop only), and without HTTP/2 pseudo-headers.
 */
export function endToEnd(headers: IncomingHttpHeaders): Headers {
  const connection = headers.connection;
  // `keep-alive` and `close`, nearly every Connection header, name nothing to drop.
  const named =
    connection && connection !== 'keep-alive' && connection !== 'close'
      ? connectionNamed(connection)
      : undefined;
  const result: Headers = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || name.charCodeAt(0) === 58 /* ':' */ || HOP_BY_HOP.has(name)) continue;
    if (named?.has(name)) continue;
    result[name] = value;
  }
  return result;
}

function connectionNamed(value: string | string[]): Set<string> {
  const names = new Set<string>();
  for (const part of (Array.isArray(value) ? value.join(',') : value).split(',')) {
    const name = part.trim().toLowerCase();
    if (name) names.add(name);
  }
  return names;
}
