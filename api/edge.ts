import { z } from 'zod';
import { celString, duration, DURATION_PATTERN, durationMs, withRules } from './common.js';

/** A malformed duration is reported by its pattern alone, not again as a CEL conversion error. */
function wellFormed(field: string): string {
  return `self.${field}.matches(${celString(DURATION_PATTERN.source)})`;
}

/**
 * Bounds of the sidecar's client-side edge: how long and how much an app's connection to
 * the outbound proxy may hold, as Envoy's and HAProxy's listener timeouts and limits bound
 * theirs. Every wait has an end and every count a ceiling; none of them can be turned off.
 * The same block is `spec.sidecar.edge` of an AiService and `edge` of the sidecar config.
 */
export const EDGE_DEFAULTS = {
  firstByteTimeout: '10s',
  headersTimeout: '10s',
  requestTimeout: '5m',
  idleTimeout: '65s',
  maxHeaderBytes: 16 * 1024,
  maxConnections: 4096,
  maxConcurrentStreams: 1000,
  maxRequestBodyBytes: 256 * 2 ** 20,
} as const;

export const edgeSchema = withRules(
  z
    .strictObject({
      firstByteTimeout: duration('A new connection that sends nothing for this long is closed.', {
        min: '100ms',
        max: '5m',
      }).default(EDGE_DEFAULTS.firstByteTimeout),
      headersTimeout: duration(
        'An HTTP/1.1 request whose headers are not all received this long after its first byte is answered 408 and its connection closed (slowloris).',
        { min: '100ms', max: '5m' },
      ).default(EDGE_DEFAULTS.headersTimeout),
      requestTimeout: duration(
        'An HTTP/1.1 request (headers and body) not all received this long after its first byte is answered 408 and its connection closed. HTTP/2 streams are bounded by the upstream timeout instead, since a gRPC call may stream its request for long.',
        { min: '1s', max: '1h' },
      ).default(EDGE_DEFAULTS.requestTimeout),
      idleTimeout: duration(
        'A keep-alive HTTP/1.1 connection with no request, an HTTP/2 connection with no open stream, or an upgraded (websocket) connection with no bytes either way is closed after this long.',
        { min: '1s', max: '1h' },
      ).default(EDGE_DEFAULTS.idleTimeout),
      maxHeaderBytes: z
        .int()
        .min(1024)
        .max(1024 * 1024)
        .default(EDGE_DEFAULTS.maxHeaderBytes)
        .describe(
          'Largest request header block in bytes: HTTP/1.1 requests over it are answered 431, HTTP/2 ones are refused (SETTINGS_MAX_HEADER_LIST_SIZE).',
        ),
      maxConnections: z
        .int()
        .min(1)
        .max(100_000)
        .default(EDGE_DEFAULTS.maxConnections)
        .describe(
          'Most client connections the proxy holds at once; one more is closed as soon as it is accepted.',
        ),
      maxConcurrentStreams: z
        .int()
        .min(1)
        .max(100_000)
        .default(EDGE_DEFAULTS.maxConcurrentStreams)
        .describe(
          'Most open streams per HTTP/2 (h2c, gRPC) connection (SETTINGS_MAX_CONCURRENT_STREAMS); more are refused with REFUSED_STREAM.',
        ),
      maxRequestBodyBytes: z
        .int()
        .min(1024)
        .max(16 * 2 ** 30)
        .default(EDGE_DEFAULTS.maxRequestBodyBytes)
        .describe(
          'Largest HTTP request body in bytes. A request that declares a larger Content-Length is answered 413 before any upstream call; a streamed body (chunked, or HTTP/2 without a length) that grows past it cancels its upstream call and is answered 413. gRPC calls are not counted: streaming RPCs carry messages for as long as they run.',
        ),
    })
    .describe(
      'Limits of the outbound proxy toward the app: timeouts and sizes of client connections. A config reload applies them to connections accepted after it; open connections keep theirs.',
    ),
  [
    {
      // The headers are part of the request: a longer wait for them than for all of it means nothing.
      cel: `!(${wellFormed('headersTimeout')} && ${wellFormed('requestTimeout')}) || duration(self.headersTimeout) <= duration(self.requestTimeout)`,
      message: 'headersTimeout must not be longer than requestTimeout',
      fieldPath: '.headersTimeout',
      check: (e) =>
        !DURATION_PATTERN.test(e.headersTimeout) ||
        !DURATION_PATTERN.test(e.requestTimeout) ||
        durationMs(e.headersTimeout) <= durationMs(e.requestTimeout) || ['headersTimeout'],
    },
  ],
);

export type EdgeLimits = z.output<typeof edgeSchema>;
