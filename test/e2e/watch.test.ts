import { describe, expect, it } from '@jest/globals';
import { KubeClient, type WatchEventType } from '../../operator/kube/client.js';
import { loadKubeCredentials } from '../../operator/kube/config.js';
import type { ResourceType } from '../../operator/kube/resources.js';
import { kubectl, sharedEnvironment } from './shared.js';

/**
 * The operator's own watch (operator/kube/client.ts) against a real API server, with the
 * credentials read from the test control plane's kubeconfig (a token and a CA file) as the
 * operator reads them: it holds a busy watch open and delivers every event, and it keeps a
 * quiet watch open past 30 s (client-node's Watch ended those, so informers re-watched
 * every half minute).
 */
const CONFIG_MAP: ResourceType = {
  apiVersion: 'v1',
  kind: 'ConfigMap',
  plural: 'configmaps',
  namespaced: true,
};
const BUSY_HOLD_MS = 150_000;
const EVENT_EVERY_MS = 10_000;
const QUIET_MS = 45_000;

async function watchConfigMaps(label: string) {
  const client = new KubeClient(
    await loadKubeCredentials({ kubeconfig: sharedEnvironment().controlPlane.kubeconfig }),
  );
  const list = await client.list(CONFIG_MAP, { namespace: 'default', labelSelector: `aimesh-test=${label}` });
  const events: string[] = [];
  const state: { ended?: unknown; endedAfterMs?: number } = {};
  const opened = Date.now();
  const handle = await client.watch(
    CONFIG_MAP,
    { namespace: 'default', labelSelector: `aimesh-test=${label}`, resourceVersion: list.resourceVersion },
    (type: WatchEventType, object: { metadata?: { name?: string } }) => {
      if (type !== 'BOOKMARK') events.push(`${type} ${object.metadata?.name}`);
    },
    (error: unknown) => {
      state.ended = error ?? 'closed';
      state.endedAfterMs = Date.now() - opened;
    },
  );
  return { events, state, handle };
}

function configMap(name: string, label: string, value: number): string {
  return `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ${name}, namespace: default, labels: {aimesh-test: ${label}}}\ndata: {tick: "${value}"}\n`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("the operator's watch on a real API server", () => {
  it(`keeps a busy watch open for ${BUSY_HOLD_MS / 1000} s and delivers every event`, async () => {
    const { events, state, handle } = await watchConfigMaps('busy');
    try {
      const ticks = BUSY_HOLD_MS / EVENT_EVERY_MS;
      for (let tick = 0; tick < ticks; tick++) {
        const applied = await kubectl(['apply', '-f', '-'], configMap('busy', 'busy', tick));
        expect(applied.code).toBe(0);
        await sleep(EVENT_EVERY_MS);
        expect(state.ended).toBeUndefined();
      }
      expect(events[0]).toBe('ADDED busy');
      expect(events.filter((e) => e === 'MODIFIED busy')).toHaveLength(ticks - 1);
    } finally {
      handle.abort();
    }
  });

  it(`keeps a quiet watch open for ${QUIET_MS / 1000} s, then delivers the next event; abort ends it cleanly`, async () => {
    const { events, state, handle } = await watchConfigMaps('quiet');
    try {
      await sleep(QUIET_MS);
      expect(state.ended).toBeUndefined();
      const applied = await kubectl(['apply', '-f', '-'], configMap('quiet', 'quiet', 1));
      expect(applied.code).toBe(0);
      const deadline = Date.now() + 10_000;
      while (events.length === 0 && Date.now() < deadline) await sleep(100);
      expect(events).toEqual(['ADDED quiet']);
      expect(state.ended).toBeUndefined();
    } finally {
      handle.abort();
    }
    const deadline = Date.now() + 10_000;
    while (state.ended === undefined && Date.now() < deadline) await sleep(50);
    // Aborting is the caller's own doing: the watch reports a clean end, not an error.
    expect(state.ended).toBe('closed');
  });
});
