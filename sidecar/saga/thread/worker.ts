/**
 * The saga thread's entry: the store, the engine, the routes its steps are called through,
 * the HTTP and gRPC control APIs, recovery and pruning, and its own tracing, all on this
 * worker's event loop so none of it delays the outbound proxy on the main thread. The main
 * thread feeds it discovery's answers and reloaded configs (this thread watches nothing),
 * asks it for its metrics, and tells it when to stop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { SidecarConfig } from '../../../api/index.js';
import { AimeshError } from '../../../lib/errors/index.js';
import { createLogger } from '../../../lib/log/index.js';
import { sidecarMetrics } from '../../admin/index.js';
import { compileConfig, type CompiledConfig, type CompiledSaga } from '../../config/compile.js';
import { consulClientFor } from '../../discovery/index.js';
import { Routes } from '../../routes.js';
import { startTracing } from '../../telemetry.js';
import { startSagaApi } from '../api.js';
import { controlAuth, type ControlAuth } from '../auth.js';
import { stackStepCaller } from '../caller.js';
import { ConsulSagaStore } from '../consul-store.js';
import { SagaEngine } from '../engine.js';
import { FileSagaStore } from '../file-store.js';
import { startSagaGrpcApi } from '../grpc-api.js';
import { sendError, type FromThread, type ThreadInit, type ToThread } from './protocol.js';

if (!parentPort) throw new AimeshError('internal', 'the saga thread runs only as a worker of the sidecar');
const port = parentPort;
const init = workerData as ThreadInit;
const post = (message: FromThread) => port.postMessage(message);

const base = createLogger('sidecar');
const log = base.child({ part: 'sagas' });

/** Closed in reverse order at stop, or when the start fails half way. */
const closers: (() => Promise<void> | void)[] = [];
const closeAll = async () => {
  for (const close of closers.reverse()) {
    await Promise.resolve()
      .then(close)
      .catch((error: unknown) => log.warn('closing a part of the saga thread failed', { error }));
  }
  closers.length = 0;
};

try {
  await run(init);
  post({ type: 'started' });
} catch (error) {
  await closeAll();
  post({ type: 'failed', error: sendError(error) });
  base.flush();
  port.close();
}

async function run({ config, owner, consulAddress, endpoints }: ThreadInit): Promise<void> {
  const compiled = compileConfig(config);
  const tracing = await startTracing(config);
  closers.push(() => tracing.shutdown());
  const metrics = sidecarMetrics({ processMetrics: false });
  const deps = { metrics, log: base.child({ part: 'stack' }), tracing };
  let routes = Routes.build(stepRoutes(compiled), deps);
  closers.push(() => routes.close());
  for (const state of endpoints) routes.find(state.service)?.setEndpoints(state.endpoints, state.stale);

  let authSettings = config.controlAuth;
  let currentAuth = controlAuth(authSettings, log);
  /** The control APIs check through this, so a reload that names another token file applies at once. */
  const auth: ControlAuth = (authorization) => currentAuth?.(authorization);
  // New sagas are added on reload; a running saga's steps do not change under its executions in flight.
  const definitions = compiled.sagas;
  let stopping: Promise<void> | undefined;

  const reload = (next: SidecarConfig) => {
    const nextCompiled = compileConfig(next);
    const previous = routes;
    routes = Routes.build(stepRoutes(nextCompiled), deps, previous);
    previous.retireUnusedBy(routes);
    if (JSON.stringify(next.controlAuth) !== JSON.stringify(authSettings)) {
      try {
        currentAuth = controlAuth(next.controlAuth, log);
        authSettings = next.controlAuth;
      } catch (error) {
        log.error('the new control API token file cannot be had; keeping the last token', { error });
      }
    }
    addDefinitions(nextCompiled.sagas);
    tracing
      .apply(next)
      .catch((error: unknown) =>
        log.warn('flushing the last spans to the old tracing endpoint failed; they are lost', { error }),
      );
  };
  const addDefinitions = (next: ReadonlyMap<string, CompiledSaga>) => {
    // New sagas start at once; a changed definition of a running saga would change the
    // steps of executions in flight, so it waits for the next restart, said in the log.
    const added: string[] = [];
    for (const [name, saga] of next) {
      if (!definitions.has(name)) {
        definitions.set(name, saga);
        added.push(name);
      } else if (JSON.stringify(definitions.get(name)?.spec) !== JSON.stringify(saga.spec)) {
        log.warn('a saga definition changed; it applies when the sidecar restarts', { saga: name });
      }
    }
    if (added.length > 0) log.info('sagas added', { sagas: added });
  };

  // From here on the main thread's messages apply; those sent meanwhile waited in the port.
  port.on('message', (message: ToThread) => {
    switch (message.type) {
      case 'endpoints':
        routes.find(message.service)?.setEndpoints(message.endpoints, message.stale);
        return;
      case 'config':
        if (!stopping) reload(message.config);
        return;
      case 'metrics':
        metrics.registry.getMetricsAsJSON().then(
          (values) => post({ type: 'metrics', id: message.id, metrics: values }),
          (error: unknown) => {
            log.warn('collecting the saga thread metrics failed', { error });
            post({ type: 'metrics', id: message.id, metrics: [] });
          },
        );
        return;
      case 'stop':
        stopping ??= closeAll().then(() => {
          base.flush();
          post({ type: 'stopped' });
          port.close();
        });
        return;
    }
  });

  const consul = consulClientFor(config, consulAddress);
  closers.push(() => consul.close());
  const store =
    config.sagaStore.kind === 'file'
      ? new FileSagaStore(config.sagaStore.path)
      : new ConsulSagaStore(consul, {
          prefix: config.sagaStore.prefix,
          sessionTtl: config.sagaStore.sessionTtl,
          owner,
        });
  closers.push(() => store.close());
  const engine = new SagaEngine({
    definitions,
    store,
    call: stackStepCaller(() => routes),
    log,
    registry: metrics.registry,
    tracer: tracing.tracer,
  });
  const api = await startSagaApi(engine, config.listen.address, config.listen.control, log, auth);
  closers.push(async () => {
    await new Promise((resolve) => api.server.close(resolve));
    api.server.closeAllConnections();
  });
  const grpcApi = await startSagaGrpcApi(engine, config.listen.address, config.listen.controlGrpc, auth);
  closers.push(() => grpcApi.server.forceShutdown());
  // Closed first at stop, as before: no new step once stopping, then the servers, the store.
  closers.push(() => engine.stop());
  await engine.startRecovery();
  log.info('saga engine started', {
    sagas: config.sagas.map((s) => s.name),
    store: config.sagaStore.kind,
    control: api.port,
    tokenFile: config.controlAuth.tokenFile ?? 'none: the control API is open to the pod',
  });
}

/** Steps call upstreams only: the AI route (its channels, keys and caches) stays on the main thread. */
function stepRoutes(compiled: CompiledConfig): CompiledConfig {
  return { ...compiled, channels: [] };
}
