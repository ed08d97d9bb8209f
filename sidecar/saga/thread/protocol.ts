/**
 * What the main thread and the saga thread say to each other. Everything crosses by
 * structured clone, so only plain data: the config as read from its file (each side
 * compiles it), discovery's answers, metrics as prom-client JSON, errors taken apart.
 */
import type { SidecarConfig } from '../../../api/index.js';
import { AimeshError, type ErrorCode } from '../../../lib/errors/index.js';
import type { MetricsJson } from '../../admin/index.js';
import type { DiscoveredEndpoint } from '../../discovery/index.js';

/** The worker's `workerData`. */
export interface ThreadInit {
  config: SidecarConfig;
  /** Who holds the store's locks: the instance id. */
  owner: string;
  /** The Consul agent address from the command line, when it overrides the config's. */
  consulAddress?: string;
  /** What discovery has answered so far, so step calls need not wait for the next change. */
  endpoints: EndpointsUpdate[];
}

export interface EndpointsUpdate {
  service: string;
  endpoints: DiscoveredEndpoint[];
  stale: boolean;
}

export type ToThread =
  | ({ type: 'endpoints' } & EndpointsUpdate)
  /** A reloaded config: routes, control auth, new sagas, tracing. */
  | { type: 'config'; config: SidecarConfig }
  | { type: 'metrics'; id: number }
  | { type: 'stop' };

export type Metrics = MetricsJson;

export type FromThread =
  | { type: 'started' }
  | { type: 'failed'; error: SentError }
  | { type: 'metrics'; id: number; metrics: Metrics }
  | { type: 'stopped' };

/** An error as it crosses: an AimeshError keeps its code and details, a Node error its errno code. */
export interface SentError {
  message: string;
  stack?: string;
  aimesh?: { code: ErrorCode; details: Record<string, unknown> };
  code?: string;
}

export function sendError(error: unknown): SentError {
  if (error instanceof AimeshError)
    return {
      message: error.message,
      ...(error.stack ? { stack: error.stack } : {}),
      aimesh: { code: error.code, details: structuredCloneable(error.details) },
    };
  const plain = error instanceof Error ? error : new Error(String(error));
  const code = (plain as NodeJS.ErrnoException).code;
  return {
    message: plain.message,
    ...(plain.stack ? { stack: plain.stack } : {}),
    ...(typeof code === 'string' ? { code } : {}),
  };
}

/** The error the thread threw, as the caller of `startSagas` saw it when the engine ran on the main thread. */
export function receivedError(sent: SentError): Error {
  const error = sent.aimesh
    ? new AimeshError(sent.aimesh.code, sent.message, { details: sent.aimesh.details })
    : Object.assign(new Error(sent.message), sent.code ? { code: sent.code } : {});
  if (sent.stack) error.stack = sent.stack;
  return error;
}

/** Details are plain data by convention; anything else would fail the clone, so it goes through JSON. */
function structuredCloneable(details: Record<string, unknown>): Record<string, unknown> {
  try {
    return JSON.parse(JSON.stringify(details)) as Record<string, unknown>;
  } catch {
    return {};
  }
}
