/**
 * OpenTelemetry tracing, exported only when observability.tracing.endpoint is set (OTLP
 * over HTTP). Without it the tracer is the API's no-op one and costs nothing per request.
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

export function startTracing(config: SidecarConfig): Tracing {
  const settings = config.observability.tracing;
  if (!settings?.endpoint) {
    return { tracer: trace.getTracer('aimesh-sidecar'), enabled: false, shutdown: async () => undefined };
  }
  const exporter = new OTLPTraceExporter({ url: `${settings.endpoint.replace(/\/$/, '')}/v1/traces` });
  const sdk = new NodeSDK({
    serviceName: `${config.service.name}.${config.service.namespace}`,
    // A caller's sampling decision wins; new traces are sampled at sampleRatio.
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(settings.sampleRatio) }),
    spanProcessors: [new BatchSpanProcessor({ exporter, scheduledDelayMillis: 1000 })],
  });
  sdk.start();
  return { tracer: trace.getTracer('aimesh-sidecar'), enabled: true, shutdown: () => sdk.shutdown() };
}
