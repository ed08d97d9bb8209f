/**
 * OpenTelemetry tracing, exported only when an endpoint is known (OTLP over HTTP): the
 * AiService's observability.tracing, else the standard OTEL_* environment a platform sets
 * for every workload. Without one the tracer is the API's no-op one and costs nothing per
 * request. A config reload that changes the settings replaces the exporter.
 */
import { context, propagation, trace, type Tracer } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler } from '@opentelemetry/sdk-trace';
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

export function startTracing(
  config: SidecarConfig,
  env: Record<string, string | undefined> = process.env,
): Tracing {
  let settings = tracingSettings(config, env);
  let sdk = settings ? startSdk(settings) : undefined;
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
    sdk = settings ? startSdk(settings) : undefined;
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

function startSdk(settings: TracingSettings): NodeSDK {
  const exporter = new OTLPTraceExporter({ url: settings.tracesUrl });
  const sdk = new NodeSDK({
    serviceName: settings.serviceName,
    // A caller's sampling decision wins; new traces are sampled at sampleRatio.
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(settings.sampleRatio) }),
    spanProcessors: [new BatchSpanProcessor({ exporter, scheduledDelayMillis: 1000 })],
  });
  sdk.start();
  return sdk;
}
