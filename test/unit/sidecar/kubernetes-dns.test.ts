import { describe, expect, it } from '@jest/globals';
import { KubernetesDnsDiscovery, type UpstreamState } from '../../../sidecar/discovery/index.js';

/**
 * Kubernetes Service DNS mode. There is no cluster DNS on the test machine, so the
 * resolver is the one injected part; what is tested is the mode's own logic: names,
 * ports, change detection and keeping the last answer when DNS fails.
 */
describe('Kubernetes Service DNS discovery', () => {
  it('resolves <service>.<namespace>.svc.<domain>, reports changes only, and keeps the last answer on errors', async () => {
    const answers: (string[] | Error)[] = [
      ['10.0.0.2', '10.0.0.1'],
      ['10.0.0.1', '10.0.0.2'],
      new Error('ETIMEOUT'),
      ['10.0.0.3'],
    ];
    const asked: string[] = [];
    const discovery = new KubernetesDnsDiscovery({
      namespace: 'suoke-life',
      clusterDomain: 'cluster.local',
      defaultPort: (service) => (service === 'rag-service' ? 50060 : 80),
      refreshMs: 60_000,
      resolver: {
        resolve4: (async (hostname: string) => {
          asked.push(hostname);
          const next = answers.shift();
          if (next instanceof Error) throw next;
          return next ?? [];
        }) as never,
      },
    });
    const seen: UpstreamState[] = [];
    discovery.watch('rag-service', (state) => seen.push(state));
    const refresh = (discovery as unknown as { refresh: (s: string) => Promise<void> }).refresh.bind(
      discovery,
    );
    await new Promise((r) => setTimeout(r, 10));
    await refresh('rag-service'); // same addresses, other order: no change
    await refresh('rag-service'); // DNS error: stale, endpoints kept
    await refresh('rag-service'); // new address
    await discovery.close();
    expect(asked[0]).toBe('rag-service.suoke-life.svc.cluster.local');
    expect(seen.map((s) => [s.endpoints.map((e) => `${e.address}:${e.port}`), s.stale])).toEqual([
      [['10.0.0.1:50060', '10.0.0.2:50060'], false],
      [['10.0.0.1:50060', '10.0.0.2:50060'], true],
      [['10.0.0.3:50060'], false],
    ]);
    expect(seen[1]?.error).toBe('ETIMEOUT');
  });
});
