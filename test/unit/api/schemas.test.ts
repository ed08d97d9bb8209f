import { describe, expect, it } from '@jest/globals';
import {
  durationMs,
  EDGE_DEFAULTS,
  formatErrors,
  validateResource,
  type AiService,
  type Saga,
} from '../../../api/index.js';

const aiService = (spec: Record<string, unknown>) => ({
  apiVersion: 'aimesh.io/v1alpha1',
  kind: 'AiService',
  metadata: { name: 'svc', namespace: 'demo' },
  spec: { image: 'registry.example.com/svc:1.0', ...spec },
});

const saga = (spec: Record<string, unknown>) => ({
  apiVersion: 'aimesh.io/v1alpha1',
  kind: 'Saga',
  metadata: { name: 'flow' },
  spec: { orchestrator: 'svc', ...spec },
});

const step = (name: string, extra: Record<string, unknown> = {}) => ({
  name,
  action: { service: 'svc', path: `/${name}` },
  ...extra,
});

function errorsOf(document: unknown): string {
  const result = validateResource(document);
  if (result.ok) throw new Error('expected the resource to be invalid');
  return formatErrors(result.errors);
}

function valid<T>(document: unknown): T {
  const result = validateResource(document);
  if (!result.ok) throw new Error(formatErrors(result.errors));
  return result.resource as T;
}

describe('AiService schema', () => {
  it('fills in the documented defaults', () => {
    const { spec } = valid<AiService>(
      aiService({ upstreams: [{ name: 'rag', retries: {}, circuitBreaker: {} }] }),
    );
    expect(spec.port).toBe(8080);
    expect(spec.protocol).toBe('http');
    expect(spec.healthCheck).toEqual({
      path: '/healthz',
      interval: '10s',
      timeout: '2s',
      failureThreshold: 3,
    });
    expect(spec.security.mtls).toBe('STRICT');
    expect(spec.sidecar).toEqual({ enabled: true, native: false, edge: EDGE_DEFAULTS });
    expect(spec.discovery.mode).toBe('consul');
    const [rag] = spec.upstreams;
    expect(rag?.loadBalancer.strategy).toBe('round-robin');
    expect(rag?.retries).toMatchObject({
      attempts: 2,
      budget: { percent: 20, minPerSecond: 10 },
      retryNonIdempotent: false,
    });
    expect(rag?.circuitBreaker).toMatchObject({
      consecutiveFailures: 5,
      openFor: '60s',
      halfOpenRequests: 2,
    });
  });

  it.each([
    [
      { replicas: 2, autoscaling: { maxReplicas: 4 } },
      'spec.replicas: set either replicas or autoscaling, not both',
    ],
    [
      { autoscaling: { minReplicas: 5, maxReplicas: 2 } },
      'spec.autoscaling.minReplicas: autoscaling.minReplicas must not exceed',
    ],
    [{ port: 4701 }, "spec.port: port collides with the aimesh sidecar's ports"],
    [{ port: 15006 }, "spec.port: port is in Istio's reserved range"],
    [
      { upstreams: [{ name: 'a' }, { name: 'a' }] },
      'spec.upstreams[1].name: upstreams must have unique names',
    ],
    [{ providers: [{ name: 'p', baseUrl: 'https://x.example/v1', weight: 0 }] }, 'spec.providers[0].weight'],
    [
      { providers: [{ name: 'p', baseUrl: 'ftp://x' }] },
      'spec.providers[0].baseUrl: must be an http:// or https:// URL',
    ],
    [
      { upstreams: [{ name: 'a', loadBalancer: { strategy: 'consistent-hash' } }] },
      'loadBalancer.hashOn must set exactly one',
    ],
    [
      { upstreams: [{ name: 'a', loadBalancer: { hashOn: { header: 'x' } } }] },
      'only used with strategy consistent-hash',
    ],
    [
      { upstreams: [{ name: 'a', fallback: { service: 'b', staleCache: {} } }] },
      'fallback must set exactly one',
    ],
    [{ upstreams: [{ name: 'a', timeout: '5 seconds' }] }, 'spec.upstreams[0].timeout: must be a duration'],
    [
      { sidecar: { edge: { headersTimeout: '0s' } } },
      'spec.sidecar.edge.headersTimeout: must be at least 100ms',
    ],
    [{ sidecar: { edge: { idleTimeout: '2h' } } }, 'spec.sidecar.edge.idleTimeout: must be at most 1h'],
    [
      { sidecar: { edge: { headersTimeout: '2m', requestTimeout: '1m' } } },
      'spec.sidecar.edge.headersTimeout: headersTimeout must not be longer than requestTimeout',
    ],
    [{ sidecar: { edge: { maxConnections: 0 } } }, 'spec.sidecar.edge.maxConnections'],
    [
      { upstreams: [{ name: 'a', retries: { backoff: { initial: '2s', max: '1s' } } }] },
      'retries.backoff.initial must not exceed',
    ],
    [
      { security: { mtls: 'DISABLE', allowedCallers: [] } },
      'security.allowedCallers needs caller identities',
    ],
    [{ replica: 2 }, 'spec: unknown field "replica"'],
    [
      {
        env: [
          { name: 'A', value: '1' },
          { name: 'A', value: '2' },
        ],
      },
      'env must not set the same variable twice',
    ],
    [{ resources: { limits: { memory: 'lots' } } }, 'spec.resources.limits.memory'],
  ])('rejects %j', (spec, message) => {
    expect(errorsOf(aiService(spec))).toContain(message);
  });

  it('accepts integer and string quantities', () => {
    const { spec } = valid<AiService>(aiService({ resources: { requests: { cpu: 1, memory: '256Mi' } } }));
    expect(spec.resources?.requests).toEqual({ cpu: 1, memory: '256Mi' });
  });

  it('rejects documents that are not aimesh resources with a clear message', () => {
    expect(errorsOf({ apiVersion: 'v1', kind: 'Pod' })).toContain('apiVersion: must be "aimesh.io/v1alpha1"');
    expect(errorsOf({ apiVersion: 'aimesh.io/v1alpha1', kind: 'Gateway' })).toContain(
      'kind: must be one of AiService, Saga',
    );
    expect(errorsOf('text')).toContain('must be a YAML or JSON object');
  });
});

describe('Saga schema', () => {
  it('fills in retry and timeout defaults', () => {
    const { spec } = valid<Saga>(saga({ steps: [step('one')] }));
    expect(spec.timeout).toBe('5m');
    expect(spec.concurrencyLimit).toBe(100);
    expect(spec.steps[0]?.retry).toEqual({
      maxAttempts: 3,
      backoff: { initial: '1s', multiplier: 2, max: '60s' },
      retryOn: ['5xx', '429', 'connect-failure', 'timeout'],
    });
    expect(spec.steps[0]?.action).toMatchObject({ method: 'POST', timeout: '30s', headers: {} });
  });

  it('accepts templates that read the input and earlier steps', () => {
    const steps = [
      step('validate_user', {
        action: { service: 'user', path: '/users/{{ input.userId }}/validate', method: 'GET' },
      }),
      step('save', {
        action: {
          service: 'health',
          path: '/records',
          body: { user: '{{ steps.validate_user.response.body.id }}' },
        },
        compensation: {
          service: 'health',
          path: '/records/{{ steps.save.response.body.id }}',
          method: 'DELETE',
        },
      }),
    ];
    expect(validateResource(saga({ steps })).ok).toBe(true);
  });

  it.each([
    [{ steps: [] }, 'spec.steps'],
    [{ steps: [step('a'), step('a')] }, 'spec.steps[1].name: steps must have unique names'],
    [{ steps: [step('a', { pivot: true }), step('b', { pivot: true })] }, 'steps may have at most one pivot'],
    [
      { steps: [step('a', { pivot: true }), step('b', { compensation: { service: 'x', path: '/undo' } })] },
      'spec.steps[1].compensation: a compensation on the pivot step or a step after it can never run',
    ],
    [
      {
        steps: [step('a', { action: { service: 'x', path: '/{{ steps.b.response.body.id }}' } }), step('b')],
      },
      'reads step "b", which has not run yet at step "a"',
    ],
    [
      { steps: [step('a', { action: { service: 'x', path: '/{{ steps.nope.response.body }}' } })] },
      'which this saga does not have',
    ],
    [
      { steps: [step('a', { action: { service: 'x', path: '/', body: { v: '{{ input.x ' } } })] },
      'spec.steps[0].action.body',
    ],
    [
      { steps: [step('a', { retry: { retryOn: ['sometimes'] } })] },
      'must be 5xx, 4xx, 429, connect-failure, timeout',
    ],
    [{ steps: [step('Bad Name')] }, 'spec.steps[0].name: must start with a lowercase letter'],
    [{ timeout: 'soon', steps: [step('a')] }, 'spec.timeout: must be a duration'],
  ])('rejects %j', (spec, message) => {
    expect(errorsOf(saga(spec))).toContain(message);
  });

  it('allows a compensation before the pivot', () => {
    const steps = [
      step('a', { compensation: { service: 'x', path: '/undo' } }),
      step('b', { pivot: true }),
      step('c'),
    ];
    expect(validateResource(saga({ steps })).ok).toBe(true);
  });
});

describe('durations', () => {
  it.each([
    ['250ms', 250],
    ['5s', 5000],
    ['1m30s', 90000],
    ['2h', 7200000],
    ['1.5s', 1500],
  ])('%s is %d ms', (text, ms) => {
    expect(durationMs(text)).toBe(ms);
  });
});

describe('zero and upper bounds', () => {
  it.each([
    ['spec.upstreams[0].timeout', aiService({ upstreams: [{ name: 'a', timeout: '0s' }] })],
    ['spec.healthCheck.timeout', aiService({ healthCheck: { timeout: '0ms' } })],
    [
      'spec.upstreams[0].circuitBreaker.openFor',
      aiService({ upstreams: [{ name: 'a', circuitBreaker: { openFor: '0s' } }] }),
    ],
    ['spec.timeout', saga({ timeout: '0m', steps: [step('a')] })],
    [
      'spec.steps[0].action.timeout',
      saga({ steps: [step('a', { action: { service: 's', path: '/a', timeout: '0s' } })] }),
    ],
  ])('refuses 0s for %s, saying what to write instead', (field, document) => {
    expect(errorsOf(document)).toContain(
      `${field}: must be longer than 0s (0s does not mean "no limit"); write a duration up to`,
    );
  });

  it('accepts 0s where it is documented to mean "at once"', () => {
    valid(
      aiService({
        upstreams: [{ name: 'a', retries: { backoff: { initial: '0s' } } }],
        aiRouting: { cooldown: '0s' },
      }),
    );
    valid(saga({ steps: [step('a', { retry: { backoff: { initial: '0s' } } })] }));
  });

  it.each([
    [
      'spec.upstreams[0].timeout: must be at most 1h',
      aiService({ upstreams: [{ name: 'a', timeout: '61m' }] }),
    ],
    ['spec.timeout: must be at most 24h', saga({ timeout: '25h', steps: [step('a')] })],
    [
      'spec.upstreams[0].circuitBreaker.maxConnections: Too big',
      aiService({ upstreams: [{ name: 'a', circuitBreaker: { maxConnections: 2_000_000 } }] }),
    ],
    [
      'spec.providers[0].quota.requestsPerMinute: Too big',
      aiService({
        providers: [{ name: 'p', baseUrl: 'https://x.example', quota: { requestsPerMinute: 2_000_000 } }],
      }),
    ],
  ])('refuses values over the bound: %s', (message, document) => {
    expect(errorsOf(document)).toContain(message);
  });

  it('refuses a step body over 64 KiB of JSON (only zod and the webhook can see a body)', () => {
    const body = { blob: 'x'.repeat(70_000) };
    expect(errorsOf(saga({ steps: [step('a', { action: { service: 's', path: '/a', body } })] }))).toContain(
      'body must be at most 65536 characters as JSON',
    );
  });

  it('refuses more headers than the API server can check', () => {
    const headers = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`x-h${i}`, 'v']));
    expect(
      errorsOf(saga({ steps: [step('a', { action: { service: 's', path: '/a', headers } })] })),
    ).toContain('must have at most 16 entries');
  });
});

describe('metadata as the API server checks it', () => {
  const named = (document: Record<string, unknown>, metadata: Record<string, unknown>) => ({
    ...document,
    metadata,
  });

  it.each([
    ['Bad_Name', 'metadata.name: must be a DNS-1123 subdomain'],
    ['a'.repeat(254), 'metadata.name: must be a DNS-1123 subdomain'],
    ['-flow', 'metadata.name: must be a DNS-1123 subdomain'],
  ])('refuses Saga name %j', (name, message) => {
    expect(errorsOf(named(saga({ steps: [step('a')] }), { name }))).toContain(message);
  });

  it('accepts a Saga name with dots, as the API server does', () => {
    valid(named(saga({ steps: [step('a')] }), { name: 'orders.v2' }));
  });

  it.each(['svc.v2', '1svc', 'a'.repeat(64)])('refuses AiService name %j: it names a Service', (name) => {
    expect(errorsOf(named(aiService({}), { name }))).toContain(
      'metadata.name: must be at most 63 lowercase letters',
    );
  });

  it('refuses a namespace, label or annotation the API server would refuse', () => {
    expect(errorsOf(named(aiService({}), { name: 'svc', namespace: 'Team_A' }))).toContain(
      'metadata.namespace: must be a DNS label',
    );
    expect(errorsOf(named(aiService({}), { name: 'svc', labels: { 'bad key!': 'v' } }))).toContain(
      'metadata.labels.bad key!: key "bad key!" must be a name',
    );
    expect(errorsOf(named(aiService({}), { name: 'svc', labels: { team: 'x'.repeat(64) } }))).toContain(
      'metadata.labels.team: a label value must be at most 63',
    );
    expect(
      errorsOf(named(aiService({}), { name: 'svc', annotations: { note: 'x'.repeat(256 * 1024 + 1) } })),
    ).toContain('metadata.annotations: annotations must be at most 256 KiB in all');
    valid(named(aiService({}), { name: 'svc', labels: { 'app.kubernetes.io/name': 'svc' } }));
  });
});

describe('step requests in the schema', () => {
  const withAction = (action: Record<string, unknown>) =>
    saga({ steps: [step('a', { action: { service: 's', ...action } })] });

  it.each([
    ['//evil.example/x', 'must start with one "/"'],
    ['https://evil.example/x', 'must start with one "/"'],
    ['/a/../b', 'must not hold a "." or ".." segment'],
    ['/a/%2e%2E/b', 'must not hold a "." or ".." segment'],
    ['/a/./b', 'must not hold a "." or ".." segment'],
    ['/a#frag', 'must not hold "#" outside a placeholder'],
    ['/a\\b', 'must not hold "\\\\" outside a placeholder'],
    ['/a b', 'must not hold " " outside a placeholder'],
    ['/a/{{ input.x }', 'is never closed'],
    ['/a/{{ input.toString() }}', 'unexpected "("'],
  ])('refuses path %j', (path, message) => {
    expect(errorsOf(withAction({ path }))).toContain(message);
  });

  it('accepts a path with a query and percent-encoded literal text', () => {
    valid(withAction({ path: '/a/%20b/{{ input.id }}?q={{ input.q }}&x=1' }));
  });

  it.each([
    [{ Host: 'x' }, 'headers must not set host'],
    [{ 'Idempotency-Key': 'x' }, 'headers must not set host'],
    [{ 'bad name': 'x' }, 'header names may hold only'],
    [{ 'x-a': 'a\nb' }, 'must not hold a line break or NUL'],
    [{ 'x-a': '{a}' }, 'must not hold "{" or "}" outside a placeholder'],
  ])('refuses headers %j', (headers, message) => {
    expect(errorsOf(withAction({ path: '/a', headers }))).toContain(message);
  });
});
