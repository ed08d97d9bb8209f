/**
 * Step calls go in-process through the same stack as the app's calls (discovery,
 * balancing, breakers, retries, deadline, tracing), with no loopback hop through the
 * outbound port. Every call carries its Idempotency-Key so a step service can apply it
 * once. What the stack reports is turned into the state machine's Outcome here.
 */
import { AimeshError, asAimeshError, classifyNetworkError } from '../../lib/errors/index.js';
import type { Routes } from '../routes.js';
import type { StackResponse } from '../stack/index.js';
import type { Failure, Outcome } from './machine.js';

/** A step's answer is kept in the execution; larger ones are a step failure. */
const MAX_RESPONSE_BYTES = 1024 * 1024;

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

/** Calls steps through the routes current when each call starts. */
export function stackStepCaller(routes: () => Routes): StepCaller {
  return async (step) => {
    try {
      const response = await routes()
        .upstream(step.service)
        .call({
          method: step.method,
          path: step.path,
          headers: {
            ...step.headers,
            host: step.service,
            'idempotency-key': step.idempotencyKey,
            ...(step.body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          ...(step.body === undefined ? {} : { body: Buffer.from(JSON.stringify(step.body)) }),
          timeoutMs: step.timeoutMs,
        });
      return await outcomeOf(step, response);
    } catch (error) {
      const failure = asAimeshError(error);
      return { ok: false, failure: failureOf(failure), message: `${step.service}: ${failure.message}` };
    }
  };
}

async function outcomeOf(step: StepCall, response: StackResponse): Promise<Outcome> {
  const text = await readText(response);
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(response.headers))
    headers[name] = Array.isArray(value) ? value.join(', ') : value;
  if (response.status >= 400) {
    return {
      ok: false,
      failure: { status: response.status },
      message: `${step.service} answered ${response.status}: ${text.slice(0, 200)}`,
    };
  }
  let body: unknown = text;
  if (String(headers['content-type'] ?? '').includes('json') && text) {
    try {
      body = JSON.parse(text) as unknown;
    } catch {
      // A step service that labels text as JSON: keep the text, the saga's templates judge it.
      body = text;
    }
  }
  return { ok: true, response: { status: response.status, headers, body } };
}

async function readText(response: StackResponse): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response.body) {
    size += (chunk as Buffer).length;
    if (size > MAX_RESPONSE_BYTES) {
      response.body.destroy();
      throw new AimeshError('upstream.failed', `answer larger than ${MAX_RESPONSE_BYTES} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The machine's terms for a failure: a network failure by kind, else the status a caller would see. */
function failureOf(error: AimeshError): Failure {
  const network = classifyNetworkError(error);
  if (network === 'connect-failure' || network === 'dns') return { error: 'connect-failure' };
  if (network === 'timeout' || error.code === 'upstream.timeout') return { error: 'timeout' };
  if (network === 'reset') return { error: 'reset' };
  return { status: error.httpStatus };
}
