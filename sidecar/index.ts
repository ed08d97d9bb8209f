/**
 * `aimesh sidecar`: loads and watches its config, registers the app, watches every
 * upstream, and serves the outbound proxy and the admin port. On SIGTERM it reports not
 * ready, deregisters (so peers stop sending), drains in-flight requests, then exits.
 */
import { connect } from 'node:net';
import { hostname } from 'node:os';
import { durationMs, type SidecarConfig } from '../api/index.js';
import { AimeshError } from '../lib/errors/index.js';
import { OriginClient, readText } from '../lib/http-client/index.js';
import { createLogger, type Logger } from '../lib/log/index.js';
import { startProbeServer } from '../lib/probe/index.js';
import { aggregatedMetrics, redact, sidecarMetrics } from './admin/index.js';
import { loadSidecarConfig, watchSidecarConfig } from './config/index.js';
import { compileConfig, compileEdge } from './config/compile.js';
import {
  consulClientFor,
  ConsulDiscovery,
  ConsulRegistration,
  DEFAULT_LOCAL_REGISTRY,
  KubernetesDnsDiscovery,
  LocalDiscovery,
  registerLocally,
  type Discovery,
  type UpstreamState,
} from './discovery/index.js';
import { listenHttp1AndH2c, outboundHandler, outboundUpgradeHandler } from './proxy/index.js';
import { Routes } from './routes.js';
import { controlAuth, startSagaThread, type SagaThread } from './saga/index.js';
import { startTracing } from './telemetry.js';

export interface SidecarOptions {
  configFile: string;
  /** Address other instances reach the app at (the pod IP). */
  advertiseAddress: string;
  /** Unique per replica; defaults to <service>-<hostname>. */
  instanceId?: string;
  adminAddress: string;
  /** Consul agent address; overrides the config (CONSUL_HTTP_ADDR in a pod). */
  consulAddress?: string;
  drainMs: number;
  localRegistry?: string;
}

export interface RunningSidecar {
  outboundPort: number;
  adminPort: number;
  stop: () => Promise<void>;
}

/** Beyond the drain time: deregistration and closing discovery, after a saga thread died. */
const CRASH_DRAIN_SLACK_MS = 10_000;

export async function runSidecar(options: SidecarOptions): Promise<RunningSidecar> {
  const log = createLogger('sidecar');
  const loaded = loadSidecarConfig(options.configFile);
  if (!loaded.ok)
    throw new AimeshError('input.invalid', `invalid sidecar config:\n  ${loaded.errors.join('\n  ')}`);
  // Before any listener: a configured token that cannot be had stops the start here. The saga
  // thread, which serves the control APIs, reads it again and follows reloads.
  controlAuth(loaded.config.controlAuth, log.child({ part: 'sagas' }));
  const metrics = sidecarMetrics();
  const tracing = await startTracing(loaded.config);
  const discovery = createDiscovery(loaded.config, options, log.child({ part: 'discovery' }));
  const deps = { metrics, log: log.child({ part: 'stack' }), tracing };
  const compiled = compileConfig(loaded.config);
  let routes = Routes.build(compiled, deps);
  const unwatch = new Map<string, () => void>();
  /** The saga engine and its control APIs, on their own thread, when this sidecar orchestrates sagas. */
  let sagas: SagaThread | undefined;
  /** Drains and stops everything; set once the sidecar has started. */
  const lifecycle: { stop?: () => Promise<void> } = {};
  const exitAfterDrain = () => {
    const exit = () => {
      log.flush();
      process.exit(1);
    };
    // A drain that hangs must not keep a sidecar without its sagas running.
    setTimeout(exit, options.drainMs + CRASH_DRAIN_SLACK_MS);
    (lifecycle.stop?.() ?? Promise.resolve())
      .catch((error: unknown) => log.error('draining after the saga thread died failed', { error }))
      .finally(exit);
  };

  /** Endpoints go to the upstream of the routes current when discovery reports them, and to the saga thread. */
  const onDiscovery = (state: UpstreamState) => {
    routes.find(state.service)?.setEndpoints(state.endpoints, state.stale);
    sagas?.setEndpoints(state);
  };
  const watchUpstreams = () => {
    const names = new Set(routes.all().map((u) => u.config.name));
    for (const [name, stop] of unwatch) {
      if (names.has(name)) continue;
      stop();
      unwatch.delete(name);
    }
    for (const upstream of routes.all()) {
      const current = discovery.states().find((s) => s.service === upstream.config.name);
      // Only an answer counts: a watch that has not heard from its source yet has no endpoints to give.
      if (current && current.updatedAt > 0) {
        upstream.setEndpoints(current.endpoints, current.stale);
        sagas?.setEndpoints(current);
      }
      if (!unwatch.has(upstream.config.name))
        unwatch.set(upstream.config.name, discovery.watch(upstream.config.name, onDiscovery));
    }
  };
  watchUpstreams();
  /** Compiled once; swapped whole. Requests in flight finish on the routes they started with. */
  const applyConfig = (next: SidecarConfig) => {
    const previous = routes;
    routes = Routes.build(compileConfig(next), deps, previous);
    outbound.setEdge(compileEdge(next.edge));
    // Before the endpoints watchUpstreams gives it, so they reach the thread's new routes.
    sagas?.applyConfig(next);
    watchUpstreams();
    previous.retireUnusedBy(routes);
  };

  let draining = false;
  const inFlight = { count: 0 };
  const handler = outboundHandler(() => routes, metrics, log.child({ part: 'proxy' }));
  const listen = loaded.config.listen;
  const outbound = await listenHttp1AndH2c(
    listen.address,
    listen.outbound,
    (req, res) => {
      inFlight.count++;
      res.once('close', () => inFlight.count--);
      handler(req, res);
    },
    {
      edge: compileEdge(loaded.config.edge),
      upgrade: outboundUpgradeHandler(() => routes, log.child({ part: 'proxy' })),
      onEdgeClose: (reason) => metrics.edgeClosed.inc({ reason }),
    },
  );
  /** Set at once, so discovery and reloads reach the thread while it starts. */
  const startSagas = async (config: SidecarConfig) => {
    const thread = startSagaThread({
      config,
      owner: options.instanceId ?? `${config.service.name}-${hostname()}`,
      ...(options.consulAddress ? { consulAddress: options.consulAddress } : {}),
      endpoints: discovery.states(),
      log: log.child({ part: 'sagas' }),
      // The kubelet restarts the container, sagas and all, as after a crash; but the proxy
      // drains first (readiness off, deregistered, requests in flight finished), so the
      // app's calls do not die with the saga thread.
      onCrash: () => exitAfterDrain(),
    });
    sagas = thread;
    try {
      await thread.started;
    } catch (error) {
      if (sagas === thread) sagas = undefined;
      throw error;
    }
  };
  // Before the admin port answers, as when the engine ran on this thread: whoever waits for
  // the sidecar's probes finds the control APIs listening too.
  if (loaded.config.sagas.length > 0) await startSagas(loaded.config);
  const admin = await startProbeServer({
    host: options.adminAddress,
    port: listen.admin,
    // One exposition: the saga thread's series aggregated with the main thread's.
    registry: {
      contentType: metrics.registry.contentType,
      metrics: async () => aggregatedMetrics(metrics.registry, sagas ? [await sagas.metrics()] : []),
    },
    ready: () => {
      if (draining) return { ready: false, reason: 'draining' };
      const waiting = discovery
        .states()
        .filter((s) => s.updatedAt === 0)
        .map((s) => s.service);
      return waiting.length > 0
        ? { ready: false, reason: `waiting for discovery of ${waiting.join(', ')}` }
        : { ready: true, reason: 'ok' };
    },
    routesFromLoopbackOnly: true,
    routes: {
      '/admin/endpoints': () =>
        routes.all().map((u) => {
          const state = discovery.states().find((s) => s.service === u.config.name);
          return {
            upstream: u.config.name,
            strategy: u.config.strategy,
            stale: state?.stale ?? false,
            ...(state?.error ? { error: state.error } : {}),
            endpoints: u.policy.view(Date.now()),
          };
        }),
      '/admin/providers': () => routes.ai?.view(Date.now()) ?? [],
      '/admin/config': () => redact(routes.config.source),
    },
  });

  // A Saga applied after the orchestrator started reaches it by a config reload: start the
  // thread then. A running thread has had the new config from applyConfig (new definitions).
  let sagasReloading = Promise.resolve();
  const reloadSagas = (next: SidecarConfig) => {
    if (sagas || next.sagas.length === 0 || draining) return;
    sagasReloading = startSagas(next).catch((error: unknown) =>
      log.error('could not start the sagas of the new config', { error }),
    );
  };
  const deregister = await register(loaded.config, options, log.child({ part: 'registration' }));
  const stopWatchingConfig = watchSidecarConfig(
    options.configFile,
    loaded.hash,
    (next) => {
      applyConfig(next);
      reloadSagas(next);
      tracing
        .apply(next)
        .catch((error: unknown) =>
          log.warn('flushing the last spans to the old tracing endpoint failed; they are lost', { error }),
        );
      log.info('config reloaded', { upstreams: next.upstreams.map((u) => u.name) });
    },
    (errors) => log.error('new config is invalid; keeping the last good one', { errors }),
  );
  log.info('sidecar started', {
    service: loaded.config.service.name,
    outbound: `${listen.address}:${outbound.port}`,
    admin: `${options.adminAddress}:${admin.port}`,
    discovery: loaded.config.discovery.mode,
    upstreams: loaded.config.upstreams.map((u) => u.name),
  });

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      draining = true;
      log.info('draining', { inFlight: inFlight.count });
      stopWatchingConfig();
      await sagasReloading;
      await sagas?.stop();
      await deregister().catch((error: unknown) => log.warn('deregistration failed', { error }));
      await outbound.close(options.drainMs);
      for (const stopWatch of unwatch.values()) stopWatch();
      await discovery.close();
      await routes.close();
      await admin.close();
      await tracing
        .shutdown()
        .catch((error: unknown) => log.warn('flushing the last spans failed; they are lost', { error }));
      log.info('stopped');
    })());
  lifecycle.stop = stop;
  return { outboundPort: outbound.port, adminPort: admin.port, stop };
}

function createDiscovery(config: SidecarConfig, options: SidecarOptions, log: Logger): Discovery {
  switch (config.discovery.mode) {
    case 'consul':
      return new ConsulDiscovery({
        client: consulClient(config, options),
        // Each failed query; the stale state (logged by the discovery) says it once.
        onError: (service, error) => log.debug('Consul query failed', { service, error }),
        log,
      });
    case 'kubernetes':
      return new KubernetesDnsDiscovery({
        namespace: config.service.namespace,
        clusterDomain: config.discovery.kubernetes.clusterDomain,
        defaultPort: (service) => config.upstreams.find((u) => u.name === service)?.port ?? 80,
      });
    case 'local':
      return new LocalDiscovery(options.localRegistry ?? DEFAULT_LOCAL_REGISTRY);
  }
}

async function register(
  config: SidecarConfig,
  options: SidecarOptions,
  log: Logger,
): Promise<() => Promise<void>> {
  const { service, discovery } = config;
  const name = discovery.consul.serviceName ?? service.name;
  const instanceId = options.instanceId ?? `${name}-${hostname()}`;
  if (discovery.mode === 'local') {
    const remove = registerLocally(options.localRegistry ?? DEFAULT_LOCAL_REGISTRY, {
      service: name,
      id: instanceId,
      address: options.advertiseAddress,
      port: service.port,
      meta: discovery.consul.meta,
      tags: discovery.consul.tags,
    });
    return async () => remove();
  }
  if (discovery.mode !== 'consul' || !discovery.consul.register) return async () => undefined;
  const client = consulClient(config, options);
  const target = `${options.advertiseAddress}:${service.port}`;
  const appConnections = new OriginClient(`http://127.0.0.1:${service.port}`, {
    connections: 1,
    connectTimeoutMs: durationMs(service.healthCheck.timeout),
    keepAliveTimeoutMs: 1000,
  });
  const registration = new ConsulRegistration(client, {
    serviceName: name,
    instanceId,
    address: options.advertiseAddress,
    port: service.port,
    tags: discovery.consul.tags,
    meta: discovery.consul.meta,
    check:
      discovery.consul.check === 'ttl'
        ? {
            // The sidecar checks the app on loopback and tells Consul: Consul never calls the
            // pod, which STRICT mTLS, an AuthorizationPolicy or a server-only Consul would stop.
            kind: 'ttl',
            ttl: ttlFor(service.healthCheck.interval),
            isHealthy: () => appIsHealthy(service, appConnections),
          }
        : service.protocol === 'grpc'
          ? {
              kind: 'grpc',
              target,
              interval: service.healthCheck.interval,
              timeout: service.healthCheck.timeout,
            }
          : {
              kind: 'http',
              url: `http://${target}${service.healthCheck.path}`,
              interval: service.healthCheck.interval,
              timeout: service.healthCheck.timeout,
            },
    deregisterCriticalAfter: discovery.consul.deregisterCriticalAfter,
    log,
  });
  // Registration failing at start (agent not up yet) is retried by keepRegistered.
  await registration
    .keepRegistered()
    .catch((error: unknown) => log.warn('registration failed; retrying in the background', { error }));
  return async () => {
    await registration.deregister();
    await Promise.all([client.close(), appConnections.close()]);
  };
}

/** The address from the flag (CONSUL_HTTP_ADDR in a pod) wins over the config's. */
function consulClient(config: SidecarConfig, options: SidecarOptions) {
  return consulClientFor(config, options.consulAddress);
}

/** Three beats of the app's check interval, so one late beat does not fail the check. */
function ttlFor(interval: string): string {
  return `${Math.max(3, Math.ceil((3 * durationMs(interval)) / 1000))}s`;
}

/**
 * The app's own health check, on loopback: its HTTP path, or for gRPC an open port. Through
 * the sidecar's one HTTP client: global fetch would load Node's bundled undici, whose
 * WebAssembly parser costs about 35 MiB (lib/http-client).
 */
async function appIsHealthy(service: SidecarConfig['service'], app: OriginClient): Promise<boolean> {
  const timeoutMs = durationMs(service.healthCheck.timeout);
  if (service.protocol === 'grpc') {
    return new Promise<boolean>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port: service.port, timeout: timeoutMs });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('timeout', () => {
        socket.destroy();
        resolve(false);
      });
      socket.once('error', () => resolve(false));
    });
  }
  try {
    const response = await app.request({
      method: 'GET',
      path: service.healthCheck.path,
      // A check every few seconds keeps no connection: an app closing an idle one as the
      // next check starts would read as unhealthy.
      headers: { connection: 'close' },
      headersTimeoutMs: timeoutMs,
    });
    await readText(response, timeoutMs, 'the app health check');
    const status = response.statusCode ?? 0;
    return status >= 200 && status < 300;
  } catch {
    // Unreachable or too slow is exactly "not healthy": Consul gets critical, nothing is lost.
    return false;
  }
}
