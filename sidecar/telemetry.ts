/**
 * OpenTelemetry tracing, exported only when an endpoint is known (OTLP over HTTP): the
 * AiService's observability.tracing, else the standard OTEL_* environment a platform sets
 * for every workload. Without one the tracer is the API's no-op one and costs nothing per
 * request.
 */
import { trace, type Tracer } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler } from '@opentelemetry/sdk-trace';
import type { SidecarConfig } from '../api/index.js';

export interface Tracing {
  tracer: Tracer;
  enabled: boolean;
  shutdown: () => Promise<void>;
}

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

export function startTracing(config: SidecarConfig): Tracing {
  const settings = tracingSettings(config);
  if (!settings) {
    return { tracer: trace.getTracer('aimesh-sidecar'), enabled: false, shutdown: async () => undefined };
  }
  const exporter = new OTLPTraceExporter({ url: settings.tracesUrl });
  const sdk = new NodeSDK({
    serviceName: settings.serviceName,
    // A caller's sampling decision wins; new traces are sampled at sampleRatio.
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(settings.sampleRatio) }),
    spanProcessors: [new BatchSpanProcessor({ exporter, scheduledDelayMillis: 1000 })],
  });
  sdk.start();
  return { tracer: trace.getTracer('aimesh-sidecar'), enabled: true, shutdown: () => sdk.shutdown() };
}
