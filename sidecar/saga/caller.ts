/**
 * Step calls go out through the sidecar's own outbound proxy (/v1/invoke/<service>/...), so
 * they get the same discovery, balancing, breakers and mTLS as the app's calls. Every call
 * carries its Idempotency-Key so a step service can apply it once.
 */
import { request, Agent } from 'undici';
import type { Outcome } from './machine.js';

export interface StepCall {
  service: string;
  method: string;
  path: string;
  headers: Record<string, string>;
  body: unknown;
  timeoutMs: number;
  idempotencyKey: string;
}

export type StepCaller = (call: StepCall) => Promise<Outcome>;

export function outboundStepCaller(outbound: string): { call: StepCaller; close: () => Promise<void> } {
  const dispatcher = new Agent({ keepAliveTimeout: 30_000, connections: 256 });
  return {
    close: () => dispatcher.close(),
    call: async (step) => {
      try {
        const response = await request(`${outbound}/v1/invoke/${step.service}${step.path}`, {
          method: step.method as 'POST',
          dispatcher,
          headers: {
            ...step.headers,
            'idempotency-key': step.idempotencyKey,
            ...(step.body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          body: step.body === undefined ? undefined : JSON.stringify(step.body),
          headersTimeout: step.timeoutMs,
          bodyTimeout: step.timeoutMs,
        });
        const text = await response.body.text();
        const headers: Record<string, string> = {};
        for (const [name, value] of Object.entries(response.headers)) {
          if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : value;
        }
        let body: unknown = text;
        if (String(headers['content-type'] ?? '').includes('json') && text) {
          try {
            body = JSON.parse(text) as unknown;
          } catch {
            body = text;
          }
        }
        if (response.statusCode >= 400) {
          // The sidecar's own errors (no route, no healthy endpoint) say why in JSON.
          const own =
            headers['x-aimesh-error'] === 'true'
              ? (body as { error?: string } | undefined)?.error
              : undefined;
          return {
            ok: false,
            failure: { status: response.statusCode },
            message: own
              ? `${step.service}: ${own} (${response.statusCode} from the sidecar)`
              : `${step.service} answered ${response.statusCode}: ${text.slice(0, 200)}`,
          };
        }
        return { ok: true, response: { status: response.statusCode, headers, body } };
      } catch (error) {
        const e = error as { code?: string; name?: string; message: string };
        const timeout = e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_BODY_TIMEOUT';
        return {
          ok: false,
          failure: { error: timeout ? 'timeout' : e.code === 'ECONNREFUSED' ? 'connect-failure' : 'reset' },
          message: `${step.service}: ${e.message}`,
        };
      }
    },
  };
}
