/**
 * `aimesh sidecar`: loads and watches its config, registers the app, watches every
 * upstream, and serves the outbound proxy and the admin port. On SIGTERM it reports not
 * ready, deregisters (so peers stop sending), drains in-flight requests, then exits.
 */
import { hostname } from 'node:os';
import type { SidecarConfig } from '../api/index.js';
import { createLogger, type Logger } from '../lib/log/index.js';
import { startProbeServer } from '../lib/probe/index.js';
import { sidecarMetrics, type SidecarMetrics } from './admin/index.js';
import { AiRoute } from './ai/index.js';
import { loadSidecarConfig, watchSidecarConfig } from './config/index.js';
import {
  ConsulClient,
  ConsulDiscovery,
  ConsulRegistration,
  DEFAULT_LOCAL_REGISTRY,
  KubernetesDnsDiscovery,
  LocalDiscovery,
  registerLocally,
  type Discovery,
} from './discovery/index.js';
import { listenHttp1AndH2c, outboundHandler, Upstreams } from './proxy/index.js';
import { startTracing, type Tracing } from './telemetry.js';
import {
  ConsulSagaStore,
  FileSagaStore,
  outboundStepCaller,
  SagaEngine,
  startSagaApi,
  startSagaGrpcApi,
} from './saga/index.js';

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

export async function runSidecar(options: SidecarOptions): Promise<RunningSidecar> {
  const log = createLogger('sidecar');
  const loaded = loadSidecarConfig(options.configFile);
  if (!loaded.ok) throw new Error(`invalid sidecar config:\n  ${loaded.errors.join('\n  ')}`);
  let config: SidecarConfig = loaded.config;
  const metrics = sidecarMetrics();
  const tracing = startTracing(config);
  const upstreams = new Upstreams(metrics);
  const discovery = createDiscovery(config, options);
  const unwatch = new Map<string, () => void>();

  let ai: AiRoute | undefined;
  const applyConfig = (next: SidecarConfig) => {
    const previousAi = ai;
    ai =
      next.providers.length > 0 ? new AiRoute(next.providers, next.aiRouting, metrics.registry) : undefined;
    // Calls already on the old route finish there; its connections close when they are done.
    void previousAi?.close();
    const { removed } = upstreams.configure(next);
    for (const name of removed) {
      unwatch.get(name)?.();
      unwatch.delete(name);
    }
    for (const upstream of upstreams.all()) {
      const current = discovery.states().find((s) => s.service === upstream.config.name);
      if (current) upstream.setEndpoints(current.endpoints, current.stale);
      if (unwatch.has(upstream.config.name)) continue;
      unwatch.set(
        upstream.config.name,
        discovery.watch(upstream.config.name, (state) =>
          upstreams.get(state.service)?.setEndpoints(state.endpoints, state.stale),
        ),
      );
    }
    config = next;
  };
  applyConfig(config);

  let draining = false;
  const inFlight = { count: 0 };
  const handler = outboundHandler(upstreams, tracing, () => ai);
  const outbound = await listenHttp1AndH2c(config.listen.address, config.listen.outbound, (req, res) => {
    inFlight.count++;
    res.once('close', () => inFlight.count--);
    handler(req, res);
  });
  const admin = await startProbeServer({
    host: options.adminAddress,
    port: config.listen.admin,
    registry: metrics.registry,
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
    routes: {
      '/admin/endpoints': () =>
        upstreams.all().map((u) => {
          const state = discovery.states().find((s) => s.service === u.config.name);
          return {
            upstream: u.config.name,
            strategy: u.config.spec.loadBalancer.strategy,
            stale: state?.stale ?? false,
            ...(state?.error ? { error: state.error } : {}),
            endpoints: u.policy.view(Date.now()),
          };
        }),
      '/admin/config': () => config,
    },
  });

  const sagas =
    config.sagas.length > 0
      ? await startSagas(config, options, outbound.port, metrics.registry, tracing.tracer, log)
      : undefined;
  const deregister = await register(config, options, log);
  const stopWatchingConfig = watchSidecarConfig(
    options.configFile,
    loaded.hash,
    (next) => {
      applyConfig(next);
      log.info('config reloaded', { upstreams: next.upstreams.map((u) => u.name) });
    },
    (errors) => log.error('new config is invalid; keeping the last good one', { errors }),
  );
  log.info('sidecar started', {
    service: config.service.name,
    outbound: `${config.listen.address}:${outbound.port}`,
    admin: `${options.adminAddress}:${admin.port}`,
    discovery: config.discovery.mode,
    upstreams: config.upstreams.map((u) => u.name),
  });

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      draining = true;
      log.info('draining', { inFlight: inFlight.count });
      stopWatchingConfig();
      await sagas?.stop();
      await deregister().catch((error: unknown) =>
        log.warn('deregistration failed', { error: String(error) }),
      );
      await outbound.close(options.drainMs);
      for (const stopWatch of unwatch.values()) stopWatch();
      await discovery.close();
      await upstreams.close();
      await ai?.close();
      await admin.close();
      await tracing.shutdown().catch(() => undefined);
      log.info('stopped');
    })());
  return { outboundPort: outbound.port, adminPort: admin.port, stop };
}

/** The saga engine and its control API, when this sidecar orchestrates sagas. */
async function startSagas(
  config: SidecarConfig,
  options: SidecarOptions,
  outboundPort: number,
  registry: SidecarMetrics['registry'],
  tracer: Tracing['tracer'],
  log: Logger,
): Promise<{ stop: () => Promise<void> }> {
  const owner = options.instanceId ?? `${config.service.name}-${hostname()}`;
  const consul = new ConsulClient(options.consulAddress ?? config.discovery.consul.address);
  const store =
    config.sagaStore.kind === 'file'
      ? new FileSagaStore(config.sagaStore.path)
      : new ConsulSagaStore(consul, {
          prefix: config.sagaStore.prefix,
          sessionTtl: config.sagaStore.sessionTtl,
          owner,
        });
  const caller = outboundStepCaller(`http://127.0.0.1:${outboundPort}`);
  const engine = new SagaEngine({
    definitions: new Map(config.sagas.map((s) => [s.name, s.spec])),
    store,
    call: caller.call,
    log,
    registry,
    tracer,
  });
  const api = await startSagaApi(engine, config.listen.address, config.listen.control);
  const grpcApi = await startSagaGrpcApi(engine, config.listen.address, config.listen.controlGrpc);
  await engine.startRecovery();
  log.info('saga engine started', {
    sagas: config.sagas.map((s) => s.name),
    store: config.sagaStore.kind,
    control: api.port,
  });
  return {
    stop: async () => {
      await engine.stop();
      await new Promise((resolve) => api.server.close(resolve));
      api.server.closeAllConnections();
      grpcApi.server.forceShutdown();
      await store.close();
      await caller.close();
      await consul.close();
    },
  };
}

function createDiscovery(config: SidecarConfig, options: SidecarOptions): Discovery {
  switch (config.discovery.mode) {
    case 'consul':
      return new ConsulDiscovery({
        client: new ConsulClient(options.consulAddress ?? config.discovery.consul.address),
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
  const client = new ConsulClient(options.consulAddress ?? discovery.consul.address);
  const target = `${options.advertiseAddress}:${service.port}`;
  const registration = new ConsulRegistration(client, {
    serviceName: name,
    instanceId,
    address: options.advertiseAddress,
    port: service.port,
    tags: discovery.consul.tags,
    meta: discovery.consul.meta,
    check:
      service.protocol === 'grpc'
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
  });
  // Registration failing at start (agent not up yet) is retried by keepRegistered.
  await registration
    .keepRegistered()
    .catch((error: unknown) =>
      log.warn('registration failed; retrying in the background', { error: String(error) }),
    );
  return async () => {
    await registration.deregister();
    await client.close();
  };
}
