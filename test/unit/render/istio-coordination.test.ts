/**
 * When the aimesh sidecar and Istio's Envoy are both in the path, a call must be tried no
 * more often than the caller's spec says, and Istio must accept the policies as a whole.
 * These checks run over every example's render with Envoy's documented semantics: a host's
 * VirtualService retries (Istio's default when none: 2 retries), and one VirtualService per
 * host for mesh traffic (IST0109 otherwise).
 */
import { describe, expect, it } from '@jest/globals';
import { join } from 'node:path';
import { exampleSystems, renderFiles } from '../../../cli/synth.js';
import { validateFiles } from '../../../cli/validate.js';
import type { AiService } from '../../../api/index.js';
import type { KubeObject } from '../../../render/index.js';
import { REPO_DIR } from '../../env/components.js';

const ISTIO_DEFAULT_RETRIES = 2;

type VirtualService = KubeObject & { spec: { hosts: string[]; http: { retries?: { attempts: number } }[] } };
type DestinationRule = KubeObject & {
  spec: { host: string; trafficPolicy: { loadBalancer: Record<string, unknown> } };
};

const resources = validateFiles(exampleSystems(join(REPO_DIR, 'examples'))).flatMap((r) =>
  r.resource ? [r.resource] : [],
);
const objects = renderFiles(resources).flatMap((f) => f.objects);
const aiServices = resources.filter((r): r is AiService => r.kind === 'AiService');
const virtualServices = objects.filter((o): o is VirtualService => o.kind === 'VirtualService');
const hostOf = (name: string, namespace: string) => `${name}.${namespace}.svc.cluster.local`;

/** Tries Envoy makes for one try the sidecar makes, from the host's VirtualService. */
function envoyTries(host: string): number {
  const owners = virtualServices.filter((vs) => vs.spec.hosts.includes(host));
  const retries = owners[0]?.spec.http[0]?.retries?.attempts ?? ISTIO_DEFAULT_RETRIES;
  return 1 + retries;
}

describe('aimesh sidecar and Istio together', () => {
  it('gives every host at most one VirtualService per namespace', () => {
    const seen = new Map<string, string>();
    for (const vs of virtualServices) {
      for (const host of vs.spec.hosts) {
        const key = `${vs.metadata.namespace}/${host}`;
        expect(seen.get(key)).toBeUndefined();
        seen.set(key, vs.metadata.name);
      }
    }
    expect(seen.size).toBe(aiServices.length);
  });

  it('never tries a call to an AiService more often than the caller configured', () => {
    let checked = 0;
    for (const caller of aiServices) {
      const namespace = caller.metadata.namespace ?? 'default';
      for (const upstream of caller.spec.upstreams) {
        const target = aiServices.find(
          (a) =>
            a.metadata.name === upstream.name &&
            (a.metadata.namespace ?? 'default') === (upstream.namespace ?? namespace),
        );
        if (!target) continue;
        const configured = upstream.retries ? upstream.retries.attempts : 1;
        const total = configured * envoyTries(hostOf(upstream.name, upstream.namespace ?? namespace));
        expect({ caller: caller.metadata.name, upstream: upstream.name, total }).toEqual({
          caller: caller.metadata.name,
          upstream: upstream.name,
          total: configured,
        });
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(10);
  });

  it("keeps the sidecar's choice of endpoint wherever the sidecar runs", () => {
    for (const caller of aiServices.filter((a) => a.spec.sidecar.enabled)) {
      for (const upstream of caller.spec.upstreams) {
        const rule = objects.find(
          (o): o is DestinationRule =>
            o.kind === 'DestinationRule' && o.metadata.name === `${caller.metadata.name}-to-${upstream.name}`,
        );
        expect(rule?.spec.trafficPolicy.loadBalancer).toEqual({ simple: 'PASSTHROUGH' });
      }
    }
  });
});
