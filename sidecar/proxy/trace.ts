/**
 * W3C trace context and request ids for outbound calls: keep the caller's trace id, start
 * a new span id for the hop through the sidecar, start a trace when there is none.
 */
import { randomBytes, randomUUID } from 'node:crypto';

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

export interface TraceHeaders {
  traceparent: string;
  tracestate?: string;
  'x-request-id': string;
}

export function propagate(incoming: {
  traceparent?: string;
  tracestate?: string;
  requestId?: string;
}): TraceHeaders {
  const match = incoming.traceparent ? TRACEPARENT.exec(incoming.traceparent.trim()) : null;
  const traceId =
    match && !/^0+$/.test(match[2] as string) ? (match[2] as string) : randomBytes(16).toString('hex');
  const flags = match ? (match[4] as string) : '01';
  return {
    traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-${flags}`,
    ...(match && incoming.tracestate ? { tracestate: incoming.tracestate } : {}),
    'x-request-id': incoming.requestId || randomUUID(),
  };
}
