import { describe, expect, it } from '@jest/globals';
import { KubeConfig, Watch } from '@kubernetes/client-node';
import { kubectl, sharedEnvironment } from './shared.js';

/**
 * What the operator can rely on from @kubernetes/client-node's Watch against a real API
 * server. 2.0.0 aborted every watch 30 s after it opened; 2.0.1 keeps a busy watch open,
 * but still ends a watch that receives nothing for 30 s (its connect timeout becomes an
 * inactivity timeout), so idle watches must be re-established by the caller.
 */
const BUSY_HOLD_MS = 150_000;
const EVENT_EVERY_MS = 10_000;

function watchConfigMaps(label: string) {
  const config = new KubeConfig();
  config.loadFromFile(sharedEnvironment().controlPlane.kubeconfig);
  const events: string[] = [];
  const state: { ended?: unknown; endedAfterMs?: number } = {};
  const opened = Date.now();
  const request = new Watch(config).watch(
    '/api/v1/namespaces/default/configmaps',
    { labelSelector: `aimesh-test=${label}` },
    (type: string, object: { metadata?: { name?: string } }) =>
      events.push(`${type} ${object.metadata?.name}`),
    (error: unknown) => {
      state.ended = error ?? 'closed';
      state.endedAfterMs = Date.now() - opened;
    },
  );
  return { events, state, request };
}

function configMap(name: string, label: string, value: number): string {
  return `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ${name}, namespace: default, labels: {aimesh-test: ${label}}}\ndata: {tick: "${value}"}\n`;
}

describe('@kubernetes/client-node watch on a real API server', () => {
  it(`keeps a busy watch open for ${BUSY_HOLD_MS / 1000} s and delivers every event`, async () => {
    const { events, state, request } = watchConfigMaps('busy');
    try {
      const ticks = BUSY_HOLD_MS / EVENT_EVERY_MS;
      for (let tick = 0; tick < ticks; tick++) {
        const applied = await kubectl(['apply', '-f', '-'], configMap('busy', 'busy', tick));
        expect(applied.code).toBe(0);
        await new Promise((r) => setTimeout(r, EVENT_EVERY_MS));
        expect(state.ended).toBeUndefined();
      }
      expect(events[0]).toBe('ADDED busy');
      expect(events.filter((e) => e === 'MODIFIED busy')).toHaveLength(ticks - 1);
    } finally {
      (await request).abort();
    }
  });

  it('ends an idle watch after its 30 s inactivity timeout, so callers must re-watch', async () => {
    const { state, request } = watchConfigMaps('idle');
    try {
      const deadline = Date.now() + 60_000;
      while (state.ended === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
      expect((state.ended as Error | undefined)?.name).toBe('TimeoutError');
      expect(state.endedAfterMs).toBeGreaterThanOrEqual(29_000);
    } finally {
      (await request).abort();
    }
  });
});
