import { describe, expect, it } from '@jest/globals';
import { injectDocuments } from '../../../cli/inject.js';
import {
  INJECTED_ANNOTATIONS,
  parseInjectionAnnotations,
  sidecarConfig,
  validateResource,
  type AiService,
} from '../../../api/index.js';
import {
  applyPatch,
  decideInjection,
  renderAiService,
  supportsNativeSidecars,
  type InjectionContext,
  type PodLike,
} from '../../../render/index.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function aiService(spec: Record<string, unknown>, name = 'checkout'): AiService {
  const result = validateResource({
    apiVersion: 'aimesh.io/v1alpha1',
    kind: 'AiService',
    metadata: { name, namespace: 'shop' },
    spec,
  });
  if (!result.ok || result.resource.kind !== 'AiService') throw new Error(JSON.stringify(result));
  return result.resource;
}

const context = (overrides: Partial<InjectionContext> = {}): InjectionContext => ({
  namespace: 'shop',
  aiServices: [],
  sidecarImage: 'aimesh:test',
  nativeSidecar: true,
  ...overrides,
});

function pod(extra: { labels?: Record<string, string>; annotations?: Record<string, string> } = {}): PodLike {
  return {
    metadata: {
      generateName: 'checkout-5d8f7c9b4-',
      labels: { 'pod-template-hash': '5d8f7c9b4', tier: 'web', ...extra.labels },
      ...(extra.annotations ? { annotations: extra.annotations } : {}),
    },
    spec: {
      containers: [
        {
          name: 'app',
          ports: [{ containerPort: 9000 }],
          env: [{ name: 'A' }],
          readinessProbe: { httpGet: { path: '/ready' } },
        },
      ],
      volumes: [{ name: 'tmp' }],
    },
  };
}

function injected(input: PodLike, ctx = context()): Json {
  const decision = decideInjection(input, ctx);
  if (!decision.inject) throw new Error(`${decision.reason}: ${decision.warnings.join('; ')}`);
  return applyPatch(input, decision.patch) as Json;
}

describe('decideInjection', () => {
  it('configures a pod without an AiService from its annotations and defaults', () => {
    const out = injected(pod({ annotations: { 'aimesh.io/upstreams': 'rag, users:least-request' } }));
    const sidecar = out.spec.initContainers[0];
    expect(sidecar).toMatchObject({ name: 'aimesh-sidecar', image: 'aimesh:test', restartPolicy: 'Always' });
    expect(out.spec.volumes.map((v: Json) => v.name)).toEqual([
      'tmp',
      'aimesh-config',
      'aimesh-tmp',
      'aimesh-control-token',
    ]);
    expect(out.spec.volumes[1].downwardAPI.items[0].fieldRef.fieldPath).toBe(
      "metadata.annotations['aimesh.io/sidecar-config']",
    );
    const config = sidecarConfig.parse(
      JSON.parse(out.metadata.annotations[INJECTED_ANNOTATIONS.sidecarConfig]),
    );
    // Name from the Deployment (generateName minus the pod-template-hash), port from the
    // container, health path from its readiness probe.
    expect(config.service).toMatchObject({ name: 'checkout', namespace: 'shop', port: 9000 });
    expect(config.service.healthCheck.path).toBe('/ready');
    expect(config.upstreams.map((u) => [u.name, u.loadBalancer.strategy])).toEqual([
      ['rag', 'round-robin'],
      ['users', 'least-request'],
    ]);
    expect(out.spec.containers[0].env).toEqual([
      { name: 'A' },
      { name: 'AIMESH_OUTBOUND', value: 'http://127.0.0.1:4700' },
      { name: 'AIMESH_CONTROL_TOKEN_FILE', value: '/var/run/aimesh/control/token' },
    ]);
    expect(out.metadata.annotations[INJECTED_ANNOTATIONS.injected]).toBe('annotations');
  });

  it('takes the sidecar of an adopting AiService from the same code as the Deployment render', () => {
    const spec = {
      port: 9000,
      providers: [
        { name: 'openai', baseUrl: 'https://api.openai.com/v1', apiKeySecretRef: { name: 'k', key: 'v' } },
      ],
      sidecar: { native: true },
    };
    const adopting = aiService({ ...spec, workload: { selector: { matchLabels: { tier: 'web' } } } });
    const out = injected(pod(), context({ aiServices: [adopting] }));
    const rendered = renderAiService(
      { resource: aiService({ ...spec, image: 'app:1' }), namespace: 'shop', sagas: [] },
      { sidecarImage: 'aimesh:test' },
    );
    const deployment = rendered.find((o) => o.kind === 'Deployment') as Json;
    const renderedPod = deployment.spec.template.spec;
    expect(out.spec.initContainers[0]).toEqual(renderedPod.initContainers[0]);
    expect(out.spec.volumes.slice(1)).toEqual(renderedPod.volumes.slice(1));
    expect(out.spec.volumes[1]).toEqual({ name: 'aimesh-config', configMap: { name: 'checkout-sidecar' } });
    expect(out.spec.containers[0].env.map((e: Json) => e.name)).toEqual([
      'A',
      'AIMESH_OUTBOUND',
      'OPENAI_BASE_URL',
      'AIMESH_CONTROL_TOKEN_FILE',
    ]);
    // The app reads the saga control API token from the volume the sidecar writes it to.
    expect(out.spec.containers[0].volumeMounts).toEqual(
      renderedPod.containers.find((c: Json) => c.name === 'app').volumeMounts.slice(1),
    );
    expect(out.metadata.annotations[INJECTED_ANNOTATIONS.injected]).toBe('aiservice/checkout');
    // The adopting AiService renders no Deployment of its own, only what the pods need
    // (the VirtualService is its host's one, with Envoy's retries off).
    const adoptedObjects = renderAiService({ resource: adopting, namespace: 'shop', sagas: [] });
    expect(adoptedObjects.map((o) => o.kind).sort()).toEqual([
      'ConfigMap',
      'PeerAuthentication',
      'Service',
      'VirtualService',
    ]);
    expect((adoptedObjects.find((o) => o.kind === 'Service') as Json).spec.selector).toEqual({ tier: 'web' });
  });

  it('is idempotent: an injected pod is left as it is', () => {
    const once = injected(pod());
    expect(decideInjection(once, context())).toEqual({
      inject: false,
      reason: 'already has the aimesh sidecar',
      warnings: [],
    });
  });

  it('leaves opted-out pods alone', () => {
    expect(decideInjection(pod({ labels: { 'aimesh.io/inject': 'disabled' } }), context()).inject).toBe(
      false,
    );
  });

  it('refuses bad annotations with warnings that name them, and injects nothing', () => {
    const decision = decideInjection(
      pod({
        annotations: {
          'aimesh.io/upstreams': 'rag:fastest',
          'aimesh.io/app-port': 'http',
          'aimesh.io/upstream': 'x',
        },
      }),
      context(),
    );
    expect(decision.inject).toBe(false);
    expect(decision.warnings.join('\n')).toMatch(/aimesh.io\/app-port="http": must be a port number/);
    expect(decision.warnings.join('\n')).toMatch(/unknown strategy "fastest"/);
    expect(decision.warnings.join('\n')).toMatch(/annotation aimesh.io\/upstream is unknown/);
  });

  it('refuses a pod whose app uses a sidecar port', () => {
    const input = pod({ annotations: { 'aimesh.io/app-port': '4700' } });
    expect(decideInjection(input, context()).warnings.join()).toMatch(
      /collides with the aimesh sidecar's ports/,
    );
  });

  it('refuses a pod two AiServices adopt', () => {
    const a = aiService({ workload: { selector: { matchLabels: { tier: 'web' } } } }, 'a');
    const b = aiService({ workload: { selector: { matchLabels: { tier: 'web' } } } }, 'b');
    expect(decideInjection(pod(), context({ aiServices: [a, b] })).warnings.join()).toMatch(
      /AiServices a and b all select this pod/,
    );
  });

  it('adds a plain container before Kubernetes 1.29', () => {
    const out = injected(pod(), context({ nativeSidecar: false }));
    expect(out.spec.initContainers).toBeUndefined();
    expect(out.spec.containers.map((c: Json) => c.name)).toEqual(['app', 'aimesh-sidecar']);
    expect(out.spec.containers[1].restartPolicy).toBeUndefined();
    expect(supportsNativeSidecars('v1.28.9')).toBe(false);
    expect(supportsNativeSidecars('v1.36.3')).toBe(true);
  });

  it('escapes annotation keys in the patch and keeps the app’s own scrape settings', () => {
    const decision = decideInjection(pod({ annotations: { 'prometheus.io/scrape': 'false' } }), context());
    if (!decision.inject) throw new Error(decision.reason);
    const paths = decision.patch.map((op) => op.path);
    expect(paths).toContain('/metadata/annotations/aimesh.io~1injected');
    expect(paths.some((p) => p.includes('prometheus.io~1port'))).toBe(false);
  });
});

describe('parseInjectionAnnotations', () => {
  it('reads the annotations and ignores other prefixes', () => {
    expect(
      parseInjectionAnnotations({
        'aimesh.io/app-port': '8080',
        'aimesh.io/app-protocol': 'grpc',
        other: 'x',
      }),
    ).toEqual({ ok: true, settings: { appPort: 8080, appProtocol: 'grpc' } });
  });
});

describe('AiService workload adoption rules', () => {
  it('refuses image, replicas and env beside workload, and needs one of image or workload', () => {
    const base = { apiVersion: 'aimesh.io/v1alpha1', kind: 'AiService', metadata: { name: 'x' } };
    const adopt = { selector: { matchLabels: { app: 'x' } } };
    const errors = (spec: object) => {
      const result = validateResource({ ...base, spec });
      return result.ok ? [] : result.errors.map((e) => `${e.field}: ${e.message}`);
    };
    expect(errors({ workload: adopt })).toEqual([]);
    expect(errors({ workload: adopt, image: 'a', replicas: 2 }).join()).toMatch(
      /spec.workload: workload adopts/,
    );
    expect(errors({ workload: adopt, env: [{ name: 'A', value: 'b' }] }).join()).toMatch(
      /remove those fields/,
    );
    expect(errors({}).join()).toMatch(/spec.image: image is required/);
    expect(errors({ workload: { selector: { matchLabels: {} } } }).join()).toMatch(/at least one label/);
  });
});

describe('aimesh inject', () => {
  const options = { sidecarImage: 'aimesh:test', nativeSidecar: true, namespace: 'shop' };
  const deployment = (name: string) => ({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name },
    spec: { template: { metadata: { labels: { tier: name } }, spec: { containers: [{ name: 'app' }] } } },
  });

  it('injects pod templates of every workload kind, in Lists too, and leaves other kinds as they are', () => {
    const service = { apiVersion: 'v1', kind: 'Service', metadata: { name: 's' }, spec: {} };
    const cronJob = {
      kind: 'CronJob',
      metadata: { name: 'nightly' },
      spec: {
        jobTemplate: {
          spec: { template: { spec: { restartPolicy: 'Never', containers: [{ name: 'j' }] } } },
        },
      },
    };
    const result = injectDocuments(
      [
        { kind: 'List', items: [deployment('web'), service] },
        cronJob,
        { kind: 'Pod', metadata: { name: 'p' }, spec: { containers: [{ name: 'c' }] } },
      ],
      options,
    );
    const [list, cron, single] = result.documents as Json[];
    expect(list?.items[0].spec.template.spec.initContainers[0].name).toBe('aimesh-sidecar');
    expect(list?.items[1]).toEqual(service);
    expect(cron?.spec.jobTemplate.spec.template.spec.initContainers[0].name).toBe('aimesh-sidecar');
    expect(single?.spec.initContainers[0].name).toBe('aimesh-sidecar');
    expect(result.report).toEqual([
      'injected Deployment/web (configured by annotations)',
      'injected CronJob/nightly (configured by annotations)',
      'injected Pod/p (configured by annotations)',
    ]);
    // Run again on its own output: nothing more is added.
    const again = injectDocuments(result.documents, options);
    expect(again.documents).toEqual(result.documents);
    expect(again.report.every((line) => line.includes('already has the aimesh sidecar'))).toBe(true);
  });

  it('lets an AiService in the same input adopt the pods it selects', () => {
    const adopting = {
      apiVersion: 'aimesh.io/v1alpha1',
      kind: 'AiService',
      metadata: { name: 'web', namespace: 'shop' },
      spec: { workload: { selector: { matchLabels: { tier: 'web' } } } },
    };
    const result = injectDocuments([adopting, deployment('web')], options);
    expect(result.documents[0]).toEqual(adopting);
    expect(result.report).toEqual(['injected Deployment/web (configured by aiservice/web)']);
  });
});
