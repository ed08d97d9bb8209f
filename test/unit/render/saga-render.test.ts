import { describe, expect, it } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { validateResource, type AiService, type Saga } from '../../../api/index.js';
import {
  grantsFor,
  istioPath,
  renderAiService,
  renderInputFor,
  sidecarConfigFor,
  type KubeObject,
  type RenderOptions,
  stepServices,
} from '../../../render/index.js';
import { REPO_DIR } from '../../env/components.js';

/** Renders through the same input gathering the operator and GitOps paths use. */
function render(resource: AiService, sagas: Saga[], options: RenderOptions = {}): KubeObject[] {
  return renderAiService(renderInputFor(resource, sagas), options);
}

function load<T>(path: string): T {
  const result = validateResource(parse(readFileSync(join(REPO_DIR, 'examples', path), 'utf8')));
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result.resource as T;
}

const healthData = load<Saga>('suoke-life/health-data-saga.yaml');

function aiService(name: string, spec: Record<string, unknown> = {}): AiService {
  const result = validateResource({
    apiVersion: 'aimesh.io/v1alpha1',
    kind: 'AiService',
    metadata: { name, namespace: 'suoke-life' },
    spec: { image: `registry.example.com/${name}:1`, ...spec },
  });
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result.resource as AiService;
}

describe('what Sagas add to rendering', () => {
  it('cuts templated paths at their first placeholder, as Istio can match them', () => {
    expect(istioPath('/records')).toBe('/records');
    expect(istioPath('/users/{{ input.userId }}/validate')).toBe('/users/*');
    expect(istioPath('/records/{{ steps.save.response.body.id }}')).toBe('/records/*');
    expect(istioPath('/search?q={{ input.q }}')).toBe('/search');
  });

  it('lists the step services and the grants per step service', () => {
    expect(stepServices(healthData)).toEqual([
      'blockchain-service',
      'health-data-service',
      'user-service',
      'xiaoai-service',
    ]);
    expect(grantsFor('health-data-service', [healthData])).toEqual([
      { orchestrator: 'health-orchestrator', methods: ['DELETE', 'POST'], paths: ['/records', '/records/*'] },
    ]);
    expect(grantsFor('unrelated', [healthData])).toEqual([]);
  });

  it('puts the definitions and an upstream per step service in the orchestrator’s sidecar config', () => {
    const config = sidecarConfigFor(
      aiService('health-orchestrator', { upstreams: [{ name: 'user-service', timeout: '2s' }] }),
      'suoke-life',
      [healthData],
    );
    expect(config.sagas.map((s) => s.name)).toEqual(['health-data']);
    expect(config.upstreams.map((u) => u.name)).toEqual([
      'user-service',
      'blockchain-service',
      'health-data-service',
      'xiaoai-service',
    ]);
    expect(config.upstreams[0]?.timeout).toBe('2s');
    expect(sidecarConfigFor(aiService('xiaoai-service'), 'suoke-life', [healthData]).sagas).toEqual([]);
  });

  it('grants the orchestrator on a step service with restricted callers, and opens nothing on an open one', () => {
    const restricted = render(
      aiService('blockchain-service', { security: { allowedCallers: [{ serviceAccount: 'ops' }] } }),
      [healthData],
    );
    const policy = restricted.find((o) => o.kind === 'AuthorizationPolicy') as unknown as {
      spec: { rules: unknown[] };
    };
    expect(policy.spec.rules).toEqual([
      { from: [{ source: { principals: ['cluster.local/ns/suoke-life/sa/ops'] } }] },
      {
        from: [{ source: { principals: ['cluster.local/ns/suoke-life/sa/health-orchestrator'] } }],
        to: [{ operation: { methods: ['POST'], paths: ['/anchors', '/anchors/*'] } }],
      },
    ]);
    // Without allowedCallers every caller is allowed; an ALLOW policy would shut the others out.
    const open = render(aiService('blockchain-service'), [healthData]);
    expect(open.some((o) => o.kind === 'AuthorizationPolicy')).toBe(false);
  });
});
