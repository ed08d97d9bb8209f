/**
 * OpenTelemetry tracing, exported only when an endpoint is known (OTLP over HTTP): the
 * AiService's observability.tracing, else the standard OTEL_* environment a platform sets
 * for every workload. Without one the tracer is the API's no-op one and costs nothing per
 * request. A config reload that changes the settings replaces the exporter.
 */
import { context, propagation, trace, type Tracer } from '@opentelemetry/api';
import type { SidecarConfig } from '../api/index.js';

export interface Tracing {
  /** The same object for the sidecar's life: it makes spans with the current settings. */
  readonly tracer: Tracer;
  /** Whether spans are exported now. */
  readonly enabled: boolean;
  /**
   * Applies a reloaded config: when the settings change (endpoint, ratio, service name), the
   * old exporter flushes and stops, and a new one starts. Rejects when the flush failed (those
   * spans are lost); the new settings apply either way.
   */
  apply: (config: SidecarConfig) => Promise<void>;
  shutdown: () => Promise<void>;
}

const TRACER_NAME = 'aimesh-sidecar';

export interface TracingSettings {
  /** Where spans go: the OTLP/HTTP traces URL. */
  tracesUrl: string;
  sampleRatio: number;
  serviceName: string;
}

/**
 * What to export and where, from the config and the OTEL_* environment (the
 * OpenTelemetry SDK's own variables): the AiService's settings win, the environment fills
 * in, and OTEL_SDK_DISABLED=true turns tracing off. Pure.
 */
export function tracingSettings(
  config: SidecarConfig,
  env: Record<string, string | undefined> = process.env,
): TracingSettings | undefined {
  if (env.OTEL_SDK_DISABLED?.toLowerCase() === 'true') return undefined;
  const spec = config.observability.tracing;
  const tracesUrl = spec?.endpoint
    ? `${spec.endpoint.replace(/\/$/, '')}/v1/traces`
    : (env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ??
      (env.OTEL_EXPORTER_OTLP_ENDPOINT
        ? `${env.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/$/, '')}/v1/traces`
        : undefined));
  if (!tracesUrl) return undefined;
  const envRatio = /traceidratio$/.test(env.OTEL_TRACES_SAMPLER ?? 'parentbased_traceidratio')
    ? Number(env.OTEL_TRACES_SAMPLER_ARG)
    : Number.NaN;
  const sampleRatio = spec?.endpoint
    ? spec.sampleRatio
    : Number.isFinite(envRatio) && envRatio >= 0 && envRatio <= 1
      ? envRatio
      : (spec?.sampleRatio ?? 0.01);
  return {
    tracesUrl,
    sampleRatio,
    serviceName: env.OTEL_SERVICE_NAME || `${config.service.name}.${config.service.namespace}`,
  };
}

export async function startTracing(
  config: SidecarConfig,
  env: Record<string, string | undefined> = process.env,
): Promise<Tracing> {
  let settings = tracingSettings(config, env);
  let sdk = settings ? await startSdk(settings) : undefined;
  let current = trace.getTracer(TRACER_NAME);
  // Reloads are applied one at a time, in order.
  let applying = Promise.resolve();
  // Holders of the tracer (the saga engine) keep it across reloads, so it delegates.
  const tracer: Tracer = {
    startSpan: (...args) => current.startSpan(...args),
    startActiveSpan: ((...args: Parameters<Tracer['startActiveSpan']>) =>
      (current.startActiveSpan as (...a: unknown[]) => unknown)(...args)) as Tracer['startActiveSpan'],
  };
  const apply = async (next: SidecarConfig) => {
    const nextSettings = tracingSettings(next, env);
    if (JSON.stringify(nextSettings) === JSON.stringify(settings)) return;
    const previous = sdk;
    // Calls made while the exporters change make no spans.
    sdk = undefined;
    let flushError: unknown;
    await previous?.shutdown().catch((error: unknown) => (flushError = error));
    // The SDK registers the API's globals; a new SDK registers only once they are cleared.
    trace.disable();
    context.disable();
    propagation.disable();
    settings = nextSettings;
    sdk = settings ? await startSdk(settings) : undefined;
    current = trace.getTracer(TRACER_NAME);
    if (flushError) throw flushError;
  };
  return {
    tracer,
    get enabled() {
      return sdk !== undefined;
    },
    apply: (next) => (applying = applying.catch(() => undefined).then(() => apply(next))),
    shutdown: async () => {
      await applying.catch(() => undefined);
      await sdk?.shutdown();
    },
  };
}

/**
 * The trace SDK alone: a tracer provider with the OTLP/HTTP exporter, async-hooks context and
 * W3C propagation. Loaded only when tracing is on: the SDK is a few MiB of code every sidecar
 * would otherwise carry, and the all-in-one NodeSDK also starts metrics and logs pipelines
 * (from OTEL_* defaults) that the sidecar does not use.
 */
async function startSdk(settings: TracingSettings): Promise<{ shutdown: () => Promise<void> }> {
  const [exporterModule, sdkTrace, hooks, core, resources] = await Promise.all([
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/sdk-trace'),
    import('@opentelemetry/context-async-hooks'),
    import('@opentelemetry/core'),
    import('@opentelemetry/resources'),
  ]);
  const exporter = new exporterModule.OTLPTraceExporter({ url: settings.tracesUrl });
  // OTEL_RESOURCE_ATTRIBUTES, read by the SDK's own detector; the service name from the settings wins.
  const resource = resources
    .defaultResource()
    .merge(resources.detectResources({ detectors: [resources.resourceAttributesEnvDetector] }))
    .merge(resources.resourceFromAttributes({ 'service.name': settings.serviceName }));
  const provider = new sdkTrace.TracerProvider({
    resource,
    // A caller's sampling decision wins; new traces are sampled at sampleRatio.
    sampler: new sdkTrace.ParentBasedSampler({
      root: new sdkTrace.TraceIdRatioBasedSampler(settings.sampleRatio),
    }),
    spanProcessors: [new sdkTrace.BatchSpanProcessor({ exporter, scheduledDelayMillis: 1000 })],
  });
  context.setGlobalContextManager(new hooks.AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(
    new core.CompositePropagator({
      propagators: [new core.W3CTraceContextPropagator(), new core.W3CBaggagePropagator()],
    }),
  );
  trace.setGlobalTracerProvider(provider);
  return { shutdown: () => provider.shutdown() };
}
