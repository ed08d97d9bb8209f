import { describe, expect, it } from '@jest/globals';
import { sidecarConfig, type SidecarConfigInput } from '../../../api/index.js';
import { tracingSettings } from '../../../sidecar/telemetry.js';

const config = (observability: SidecarConfigInput['observability'] = {}) =>
  sidecarConfig.parse({ service: { name: 'rag', namespace: 'ai', port: 8080 }, observability });

describe('tracing settings from the config and the OTEL_* environment', () => {
  it('is off with neither', () => {
    expect(tracingSettings(config(), {})).toBeUndefined();
  });

  it('takes the standard environment a platform sets for every workload', () => {
    expect(
      tracingSettings(config(), {
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://otel-collector.observability:4318/',
        OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
        OTEL_TRACES_SAMPLER_ARG: '0.25',
        OTEL_SERVICE_NAME: 'rag-api',
      }),
    ).toEqual({
      tracesUrl: 'http://otel-collector.observability:4318/v1/traces',
      sampleRatio: 0.25,
      serviceName: 'rag-api',
    });
    expect(
      tracingSettings(config(), {
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector:4318/custom/traces',
      }),
    ).toMatchObject({ tracesUrl: 'http://collector:4318/custom/traces', serviceName: 'rag.ai' });
  });

  it("lets the AiService's own settings win, and OTEL_SDK_DISABLED turn it off", () => {
    const own = config({ tracing: { endpoint: 'http://tempo:4318', sampleRatio: 0.5 } });
    expect(
      tracingSettings(own, {
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://other:4318',
        OTEL_TRACES_SAMPLER_ARG: '1',
      }),
    ).toMatchObject({ tracesUrl: 'http://tempo:4318/v1/traces', sampleRatio: 0.5 });
    expect(tracingSettings(own, { OTEL_SDK_DISABLED: 'true' })).toBeUndefined();
  });

  it('ignores a sampler argument that is not a ratio', () => {
    expect(
      tracingSettings(config(), {
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318',
        OTEL_TRACES_SAMPLER_ARG: 'lots',
      })?.sampleRatio,
    ).toBe(0.01);
  });
});
