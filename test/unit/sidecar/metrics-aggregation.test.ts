/**
 * The sidecar's /metrics is one exposition of two registries: the main thread's and the
 * saga thread's. Each series shows once, and its value means what it meant with one
 * registry: counts and histograms add up, the per-upstream gauges both threads set do not.
 */
import { describe, expect, it } from '@jest/globals';
import { aggregatedMetrics, sidecarMetrics } from '../../../sidecar/admin/index.js';

function series(text: string, name: string): string[] {
  return text.split('\n').filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `));
}

describe('metrics aggregated across the sidecar threads', () => {
  it('sums counters and histograms, keeps the larger per-upstream gauge, and passes the process metrics as they are', async () => {
    const main = sidecarMetrics();
    const thread = sidecarMetrics({ processMetrics: false });
    main.retries.inc({ upstream: 'a' });
    thread.retries.inc({ upstream: 'a' }, 2);
    main.duration.observe({ upstream: 'a' }, 0.003);
    thread.duration.observe({ upstream: 'a' }, 0.02);
    thread.duration.observe({ upstream: 'b' }, 0.2);
    main.endpoints.set({ upstream: 'a' }, 3);
    thread.endpoints.set({ upstream: 'a' }, 3);
    main.breakerState.set({ upstream: 'a', endpoint: 'e1' }, 0);
    thread.breakerState.set({ upstream: 'a', endpoint: 'e1' }, 2);

    const text = await aggregatedMetrics(main.registry, [await thread.registry.getMetricsAsJSON()]);

    const types = text.split('\n').filter((line) => line.startsWith('# TYPE '));
    expect(new Set(types).size).toBe(types.length);
    expect(series(text, 'aimesh_sidecar_retries_total')).toEqual([
      'aimesh_sidecar_retries_total{upstream="a"} 3',
    ]);
    expect(series(text, 'aimesh_sidecar_request_duration_seconds_count')).toEqual([
      'aimesh_sidecar_request_duration_seconds_count{upstream="a"} 2',
      'aimesh_sidecar_request_duration_seconds_count{upstream="b"} 1',
    ]);
    expect(text).toContain('aimesh_sidecar_request_duration_seconds_bucket{le="0.005",upstream="a"} 1\n');
    expect(text).toContain('aimesh_sidecar_request_duration_seconds_bucket{le="0.025",upstream="a"} 2\n');
    expect(text).toContain('aimesh_sidecar_request_duration_seconds_sum{upstream="a"} 0.023\n');
    expect(series(text, 'aimesh_sidecar_endpoints')).toEqual(['aimesh_sidecar_endpoints{upstream="a"} 3']);
    expect(series(text, 'aimesh_sidecar_breaker_state')).toEqual([
      'aimesh_sidecar_breaker_state{upstream="a",endpoint="e1"} 2',
    ]);
    // prom-client marks this one "omit" for merging copies; the main thread's only copy stays.
    expect(series(text, 'aimesh_sidecar_process_start_time_seconds')).toHaveLength(1);
  });

  it('serves the main registry alone when no other thread runs', async () => {
    const main = sidecarMetrics();
    main.retries.inc({ upstream: 'a' });
    const text = await aggregatedMetrics(main.registry, []);
    expect(series(text, 'aimesh_sidecar_retries_total')).toEqual([
      'aimesh_sidecar_retries_total{upstream="a"} 1',
    ]);
    const types = (t: string) => t.split('\n').filter((line) => line.startsWith('# TYPE '));
    expect(types(text)).toEqual(types(await main.registry.metrics()));
  });
});
