/**
 * The sidecar's sagas on a thread of their own (node:worker_threads): the engine, its store,
 * its step calls and its control APIs run on the worker's event loop, so a saga load does
 * not delay the outbound proxy on the main thread. The main thread keeps discovery and
 * config watching and forwards what they report; it serves the worker's metrics within its
 * own /metrics. A worker that dies on its own is reported through `onCrash`: the sidecar
 * must not run on without the sagas it was configured with.
 */
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { SidecarConfig } from '../../../api/index.js';
import { AimeshError } from '../../../lib/errors/index.js';
import type { Logger } from '../../../lib/log/index.js';
import type { UpstreamState } from '../../discovery/index.js';
import {
  receivedError,
  type EndpointsUpdate,
  type FromThread,
  type Metrics,
  type ThreadInit,
  type ToThread,
} from './protocol.js';

export type { Metrics as ThreadMetrics } from './protocol.js';

/** How long a scrape waits for the thread's metrics (Prometheus's own scrape timeout is 10 s). */
const METRICS_WAIT_MS = 5_000;
/** How long a stop waits for the thread to close its APIs and store before ending it. */
const STOP_WAIT_MS = 10_000;

export interface SagaThreadOptions {
  config: SidecarConfig;
  /** Who holds the store's locks: the instance id. */
  owner: string;
  consulAddress?: string;
  /** Discovery's states now; later changes come through `setEndpoints`. */
  endpoints: UpstreamState[];
  log: Logger;
  /** The worker died after it started (an uncaught error, out of memory). */
  onCrash: (error: Error) => void;
}

export interface SagaThread {
  /**
   * Resolves once the control APIs listen and the first recovery ran; rejects with the
   * error the start failed with (a port in use, a store that cannot be opened).
   */
  started: Promise<void>;
  setEndpoints: (state: UpstreamState) => void;
  /** A reloaded config: the thread's routes, control auth, new sagas and tracing follow it. */
  applyConfig: (config: SidecarConfig) => void;
  /** The thread's registry as prom-client JSON, for the main thread to aggregate. */
  metrics: () => Promise<Metrics>;
  /** Stops the engine, closes the control APIs and the store, then ends the thread. */
  stop: () => Promise<void>;
}

/**
 * Starts the worker. Messages can be sent at once: they wait in the port until the
 * worker listens, so no discovery change is lost while it starts.
 */
export function startSagaThread(options: SagaThreadOptions): SagaThread {
  const { log } = options;
  const init: ThreadInit = {
    config: options.config,
    owner: options.owner,
    ...(options.consulAddress ? { consulAddress: options.consulAddress } : {}),
    endpoints: options.endpoints.filter((s) => s.updatedAt > 0).map(endpointsUpdate),
  };
  const worker = new Worker(workerEntry(), { workerData: init, ...workerLoader() });
  const send = (message: ToThread) => worker.postMessage(message);

  let phase: 'starting' | 'started' | 'stopping' | 'gone' = 'starting';
  let startedResolve!: () => void;
  let startedReject!: (error: Error) => void;
  const started = new Promise<void>((resolve, reject) => {
    startedResolve = resolve;
    startedReject = reject;
  });
  let stoppedResolve!: () => void;
  const stopped = new Promise<void>((resolve) => (stoppedResolve = resolve));
  const pending = new Map<number, { resolve: (m: Metrics) => void; reject: (e: Error) => void }>();
  let nextId = 0;
  let lastError: Error | undefined;

  worker.on('message', (message: FromThread) => {
    switch (message.type) {
      case 'started':
        if (phase === 'starting') phase = 'started';
        startedResolve();
        return;
      case 'failed':
        phase = 'gone';
        startedReject(receivedError(message.error));
        void worker.terminate();
        return;
      case 'metrics':
        pending.get(message.id)?.resolve(message.metrics);
        pending.delete(message.id);
        return;
      case 'stopped':
        stoppedResolve();
        return;
    }
  });
  // An uncaught error in the worker: 'exit' follows, and says what to do about it.
  worker.on('error', (error) => (lastError = error));
  worker.on('exit', (code) => {
    const was = phase;
    phase = 'gone';
    const error =
      lastError ?? new AimeshError('internal', `the saga thread exited with code ${code} on its own`);
    for (const request of pending.values()) request.reject(error);
    pending.clear();
    stoppedResolve();
    if (was === 'starting') startedReject(error);
    if (was === 'started') {
      log.error('the saga thread died; the sidecar stops rather than run on without its sagas', { error });
      options.onCrash(error);
    }
  });

  return {
    started,
    setEndpoints: (state) => {
      if (phase === 'starting' || phase === 'started') send({ type: 'endpoints', ...endpointsUpdate(state) });
    },
    applyConfig: (config) => {
      if (phase === 'starting' || phase === 'started') send({ type: 'config', config });
    },
    metrics: () => {
      if (phase === 'gone') return Promise.resolve([]);
      const id = nextId++;
      return new Promise<Metrics>((resolve, reject) => {
        // A thread too busy to answer in time must not hold up the scrape of the proxy's
        // own metrics: those are served without the saga series, and the log says why.
        const timer = setTimeout(() => {
          pending.delete(id);
          log.warn('the saga thread did not answer for its metrics in time; serving the rest', {
            waitedMs: METRICS_WAIT_MS,
          });
          resolve([]);
        }, METRICS_WAIT_MS);
        pending.set(id, {
          resolve: (metrics) => {
            clearTimeout(timer);
            resolve(metrics);
          },
          reject: (error) => {
            clearTimeout(timer);
            reject(error);
          },
        });
        send({ type: 'metrics', id });
      });
    },
    stop: async () => {
      if (phase === 'gone') return;
      phase = 'stopping';
      send({ type: 'stop' });
      // Every state change is in the store before it is acted on, so a thread that cannot
      // stop in time loses nothing by being ended: its executions recover on the next start.
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>(
        (resolve) => (timer = setTimeout(() => resolve('late'), STOP_WAIT_MS)),
      );
      if ((await Promise.race([stopped, late])) === 'late')
        log.warn('the saga thread did not stop in time; ending it', { waitedMs: STOP_WAIT_MS });
      clearTimeout(timer);
      await worker.terminate();
    },
  };
}

function endpointsUpdate(state: UpstreamState): EndpointsUpdate {
  return { service: state.service, endpoints: state.endpoints, stale: state.stale };
}

/**
 * The worker runs the file next to this one: worker.js from the build (the image runs
 * dist/), worker.ts from the sources (tests and `npm run aimesh` run them under tsx).
 */
function workerEntry(): URL {
  return new URL(`./worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url);
}

/**
 * A worker inherits the process's Node options, so under `node --import tsx` it loads
 * TypeScript as the main thread does. Sources loaded some other way (a test runner's own
 * transform) give the worker tsx themselves.
 */
function workerLoader(): { execArgv?: string[] } {
  if (!import.meta.url.endsWith('.ts') || process.execArgv.some((arg) => arg.includes('tsx'))) return {};
  return { execArgv: [...process.execArgv, '--import', 'tsx'] };
}
