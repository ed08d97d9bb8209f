import { describe, expect, it } from '@jest/globals';
import { sidecarConfig, validateResource, type AiService, type Saga } from '../../../api/index.js';
import {
  renderAiService,
  renderInputFor,
  SIDECAR_NODE_OPTIONS,
  sidecarNodeOptions,
  type KubeObject,
  type RenderOptions,
} from '../../../render/index.js';

/** Renders through the same input gathering the operator and GitOps paths use. */
function render(resource: AiService, options: RenderOptions = {}, sagas: Saga[] = []): KubeObject[] {
  return renderAiService(renderInputFor(resource, sagas), options);
}

/** Render is pure: these tests check the fields that matter, with no snapshots. */
function aiService(spec: Record<string, unknown>): AiService {
  const result = validateResource({
    apiVersion: 'aimesh.io/v1alpha1',
    kind: 'AiService',
    metadata: { name: 'xiaoai', namespace: 'suoke-life' },
    spec: { image: 'registry.example.com/xiaoai:1.6.0', ...spec },
  });
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result.resource as AiService;
}

type Any = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const find = (objects: KubeObject[], kind: string, name?: string) =>
  objects.find((o) => o.kind === kind && (!name || o.metadata.name === name)) as Any | undefined;
const kinds = (objects: KubeObject[]) => objects.map((o) => `${o.kind}/${o.metadata.name}`).sort();

describe('renderAiService', () => {
  it('renders the workload of a minimal AiService', () => {
    const objects = render(aiService({ replicas: 1 }));
    expect(kinds(objects)).toEqual([
      'ConfigMap/xiaoai-sidecar',
      'Deployment/xiaoai',
      'PeerAuthentication/xiaoai',
      'Service/xiaoai',
      'ServiceAccount/xiaoai',
      'VirtualService/xiaoai',
    ]);
    const deployment = find(objects, 'Deployment') as Any;
    const pod = deployment.spec.template.spec;
    expect(deployment.spec.replicas).toBe(1);
    expect(pod.serviceAccountName).toBe('xiaoai');
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true });
    expect(pod.containers.map((c: Any) => c.name)).toEqual(['app', 'aimesh-sidecar']);
    for (const container of pod.containers) {
      expect(container.securityContext).toMatchObject({
        runAsNonRoot: true,
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
      });
      expect(container.resources.requests).toBeDefined();
    }
    const app = pod.containers[0];
    expect(app.readinessProbe.httpGet).toMatchObject({ path: '/healthz', port: 8080 });
    expect(app.ports).toEqual([expect.objectContaining({ containerPort: 8080 })]);
    const sidecar = pod.containers[1];
    expect(sidecar.args).toEqual(['sidecar', '--config', expect.stringMatching(/sidecar\.json$/)]);
    expect(sidecar.ports.map((p: Any) => p.containerPort)).toEqual([4700, 4701, 4702, 4703]);
    expect(find(objects, 'Service')?.spec.ports).toEqual([
      expect.objectContaining({ port: 8080, appProtocol: 'http' }),
    ]);
    for (const object of objects)
      expect(object.metadata.labels?.['app.kubernetes.io/managed-by']).toBe('aimesh-operator');
  });

  it('hands replicas to an HPA with autoscaling, and adds a PDB above one replica', () => {
    const scaled = render(
      aiService({ autoscaling: { minReplicas: 2, maxReplicas: 6, targetCPUPercent: 70 } }),
    );
    expect(find(scaled, 'Deployment')?.spec.replicas).toBeUndefined();
    expect(find(scaled, 'HorizontalPodAutoscaler')?.spec).toMatchObject({
      minReplicas: 2,
      maxReplicas: 6,
      metrics: [{ resource: { target: { averageUtilization: 70 } } }],
    });
    expect(find(scaled, 'PodDisruptionBudget')?.spec.maxUnavailable).toBe(1);
    expect(find(render(aiService({ replicas: 1 })), 'PodDisruptionBudget')).toBeUndefined();
  });

  it('keeps the sidecar in charge: PASSTHROUGH DestinationRules per upstream, one VirtualService for its own host with retries off', () => {
    const objects = render(
      aiService({
        upstreams: [
          {
            name: 'rag-service',
            timeout: '1m30s',
            retries: {
              attempts: 3,
              perTryTimeout: '500ms',
              retryOn: ['5xx', 'reset'],
              retriableStatusCodes: [409],
            },
            loadBalancer: { strategy: 'ewma' },
            circuitBreaker: {
              consecutiveFailures: 5,
              openFor: '60s',
              maxConnections: 100,
              maxPendingRequests: 10,
            },
          },
          {
            name: 'user-service',
            loadBalancer: { strategy: 'consistent-hash', hashOn: { header: 'x-user' } },
          },
        ],
      }),
    );
    const rag = find(objects, 'DestinationRule', 'xiaoai-to-rag-service') as Any;
    expect(rag.spec.host).toBe('rag-service.suoke-life.svc.cluster.local');
    expect(rag.spec.workloadSelector.matchLabels).toEqual({ 'aimesh.io/service': 'xiaoai' });
    // The sidecar picked the endpoint (EWMA here); Envoy must not pick again.
    expect(rag.spec.trafficPolicy).toEqual({
      loadBalancer: { simple: 'PASSTHROUGH' },
      connectionPool: { tcp: { maxConnections: 100 }, http: { http1MaxPendingRequests: 10 } },
    });
    expect(find(objects, 'DestinationRule', 'xiaoai-to-user-service')?.spec.trafficPolicy).toEqual({
      loadBalancer: { simple: 'PASSTHROUGH' },
    });
    const virtualServices = objects.filter((o) => o.kind === 'VirtualService') as Any[];
    expect(virtualServices).toHaveLength(1);
    expect(virtualServices[0]?.spec).toEqual({
      hosts: ['xiaoai.suoke-life.svc.cluster.local'],
      http: [
        {
          route: [{ destination: { host: 'xiaoai.suoke-life.svc.cluster.local' } }],
          retries: { attempts: 0 },
        },
      ],
    });
  });

  it('lets Envoy balance and eject when the sidecar is disabled', () => {
    const objects = render(
      aiService({
        sidecar: { enabled: false },
        upstreams: [
          {
            name: 'rag-service',
            loadBalancer: { strategy: 'ewma' },
            circuitBreaker: { consecutiveFailures: 5, openFor: '60s' },
          },
          {
            name: 'user-service',
            loadBalancer: { strategy: 'consistent-hash', hashOn: { header: 'x-user' } },
          },
        ],
      }),
    );
    expect(find(objects, 'DestinationRule', 'xiaoai-to-rag-service')?.spec.trafficPolicy).toEqual({
      loadBalancer: { simple: 'LEAST_REQUEST' },
      outlierDetection: {
        consecutive5xxErrors: 5,
        interval: '10s',
        baseEjectionTime: '60s',
        maxEjectionPercent: 100,
      },
    });
    expect(
      find(objects, 'DestinationRule', 'xiaoai-to-user-service')?.spec.trafficPolicy.loadBalancer,
    ).toEqual({
      consistentHash: { httpHeaderName: 'x-user' },
    });
  });

  it('turns security into PeerAuthentication and an AuthorizationPolicy of caller principals', () => {
    const objects = render(
      aiService({
        security: {
          mtls: 'STRICT',
          allowedCallers: [
            { serviceAccount: 'api-gateway', methods: ['POST'], paths: ['/v1/chat/*'] },
            { serviceAccount: 'ingress', namespace: 'istio-system' },
          ],
        },
      }),
    );
    expect(find(objects, 'PeerAuthentication')?.spec.mtls).toEqual({ mode: 'STRICT' });
    expect(find(objects, 'AuthorizationPolicy')?.spec).toEqual({
      selector: { matchLabels: { 'aimesh.io/service': 'xiaoai' } },
      action: 'ALLOW',
      rules: [
        {
          from: [{ source: { principals: ['cluster.local/ns/suoke-life/sa/api-gateway'] } }],
          to: [{ operation: { methods: ['POST'], paths: ['/v1/chat/*'] } }],
        },
        { from: [{ source: { principals: ['cluster.local/ns/istio-system/sa/ingress'] } }] },
      ],
    });
    // allowedCallers: [] denies everyone (an ALLOW policy with no rules).
    expect(
      find(render(aiService({ security: { allowedCallers: [] } })), 'AuthorizationPolicy')?.spec.rules,
    ).toEqual([]);
  });

  it('mounts provider keys from Secrets and never writes them into env or the ConfigMap', () => {
    const objects = render(
      aiService({
        providers: [
          {
            name: 'openai',
            baseUrl: 'https://api.openai.com/v1',
            apiKeySecretRef: { name: 'openai', key: 'api-key' },
          },
        ],
      }),
    );
    const pod = (find(objects, 'Deployment') as Any).spec.template.spec;
    expect(pod.volumes).toContainEqual({
      name: 'aimesh-provider-openai',
      secret: { secretName: 'openai', items: [{ key: 'api-key', path: 'api-key' }] },
    });
    expect(JSON.stringify(pod.containers.map((c: Any) => c.env))).not.toContain('api-key');
    expect(pod.containers[0].env).toContainEqual({
      name: 'OPENAI_BASE_URL',
      value: 'http://127.0.0.1:4700/v1/ai',
    });
    const config = sidecarConfig.parse(
      JSON.parse(Object.values(find(objects, 'ConfigMap')?.data as object)[0] as string),
    );
    expect(config.providers[0]).toMatchObject({
      name: 'openai',
      apiKeyFile: '/var/run/secrets/aimesh/providers/openai/api-key',
    });
    expect(JSON.stringify(config)).not.toContain('secretKeyRef');
  });

  it('gives the sidecar and the app, and no one else, an in-memory volume for the saga control API token', () => {
    const objects = render(aiService({ sidecar: { native: false } }));
    const pod = (find(objects, 'Deployment') as Any).spec.template.spec;
    expect(pod.volumes).toContainEqual({
      name: 'aimesh-control-token',
      emptyDir: { medium: 'Memory', sizeLimit: '1Mi' },
    });
    const mountOf = (name: string) =>
      pod.containers
        .find((c: Any) => c.name === name)
        .volumeMounts.find((m: Any) => m.name === 'aimesh-control-token');
    // The sidecar writes the token; the app only reads it.
    expect(mountOf('aimesh-sidecar')).toEqual({
      name: 'aimesh-control-token',
      mountPath: '/var/run/aimesh/control',
    });
    expect(mountOf('app')).toEqual({
      name: 'aimesh-control-token',
      mountPath: '/var/run/aimesh/control',
      readOnly: true,
    });
    expect(pod.containers[0].env).toContainEqual({
      name: 'AIMESH_CONTROL_TOKEN_FILE',
      value: '/var/run/aimesh/control/token',
    });
    const config = sidecarConfig.parse(
      JSON.parse(Object.values(find(objects, 'ConfigMap')?.data as object)[0] as string),
    );
    expect(config.controlAuth).toEqual({ tokenFile: '/var/run/aimesh/control/token', createToken: true });
  });

  it('runs the sidecar as a native sidecar when asked, and not at all when disabled', () => {
    const native = (find(render(aiService({ sidecar: { native: true } })), 'Deployment') as Any).spec.template
      .spec;
    expect(native.containers.map((c: Any) => c.name)).toEqual(['app']);
    expect(native.initContainers).toEqual([
      expect.objectContaining({ name: 'aimesh-sidecar', restartPolicy: 'Always' }),
    ]);
    // Rendered with the typed API like any container: probe ports survive (they once came out as 0).
    expect(native.initContainers[0].readinessProbe.httpGet.port).toBe(4701);
    const none = render(aiService({ sidecar: { enabled: false } }));
    expect(find(none, 'ConfigMap')).toBeUndefined();
    expect((find(none, 'Deployment') as Any).spec.template.spec.containers.map((c: Any) => c.name)).toEqual([
      'app',
    ]);
  });

  it('renders no Istio object when the cluster has no Istio, and everything else the same', () => {
    const resource = aiService({ replicas: 2, upstreams: [{ name: 'rag-service', timeout: '2s' }] });
    const withIstio = render(resource);
    const without = render(resource, { istio: false });
    const istioKinds = ['DestinationRule', 'VirtualService', 'PeerAuthentication', 'AuthorizationPolicy'];
    expect(without.filter((o) => istioKinds.includes(o.kind))).toEqual([]);
    expect(withIstio.filter((o) => !istioKinds.includes(o.kind))).toEqual(without);
    expect(withIstio.some((o) => o.kind === 'DestinationRule')).toBe(true);
  });

  it('merges spec.pod over the safe defaults, so a stock image such as nginx can run', () => {
    const objects = render(
      aiService({
        image: 'nginx:1.27',
        port: 8081,
        pod: {
          labels: { team: 'web' },
          securityContext: { runAsNonRoot: false, fsGroup: 101 },
          nodeSelector: { 'kubernetes.io/os': 'linux' },
          tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'web', effect: 'NoSchedule' }],
          imagePullSecrets: [{ name: 'registry' }],
          volumes: [{ name: 'cache', emptyDir: { sizeLimit: '64Mi' } }],
          app: {
            command: ['nginx'],
            args: ['-g', 'daemon off;'],
            securityContext: { readOnlyRootFilesystem: false, runAsNonRoot: false },
            volumeMounts: [{ name: 'cache', mountPath: '/var/cache/nginx' }],
          },
        },
      }),
    );
    const pod = find(objects, 'Deployment')?.spec.template;
    expect(pod.metadata.labels).toMatchObject({ team: 'web', 'aimesh.io/service': 'xiaoai' });
    expect(pod.spec.securityContext).toEqual({
      runAsNonRoot: false,
      fsGroup: 101,
      seccompProfile: { type: 'RuntimeDefault' },
    });
    expect(pod.spec.nodeSelector).toEqual({ 'kubernetes.io/os': 'linux' });
    expect(pod.spec.tolerations).toHaveLength(1);
    expect(pod.spec.imagePullSecrets).toEqual([{ name: 'registry' }]);
    expect(pod.spec.volumes).toContainEqual({ name: 'cache', emptyDir: { sizeLimit: '64Mi' } });
    const app = pod.spec.containers.find((c: { name: string }) => c.name === 'app');
    expect(app.command).toEqual(['nginx']);
    expect(app.args).toEqual(['-g', 'daemon off;']);
    // What is not overridden keeps its safe default.
    expect(app.securityContext).toMatchObject({
      readOnlyRootFilesystem: false,
      runAsNonRoot: false,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
    });
    expect(app.volumeMounts).toEqual([
      { name: 'tmp', mountPath: '/tmp' },
      { name: 'aimesh-control-token', mountPath: '/var/run/aimesh/control', readOnly: true },
      { name: 'cache', mountPath: '/var/cache/nginx' },
    ]);
  });

  it("puts the AiService's labels on every object it owns, its own selector labels winning", () => {
    const resource = aiService({});
    resource.metadata.labels = { team: 'care', 'app.kubernetes.io/managed-by': 'someone-else' };
    for (const object of render(resource)) {
      expect(object.metadata.labels).toMatchObject({
        team: 'care',
        'app.kubernetes.io/managed-by': 'aimesh-operator',
      });
    }
  });

  it('runs the sidecar with a small young generation and an old space sized from its memory limit', () => {
    const sidecarOf = (resource: AiService) => {
      const pod = find(render(resource), 'Deployment')?.spec.template.spec;
      return [...pod.containers, ...(pod.initContainers ?? [])].find((c: Any) => c.name === 'aimesh-sidecar');
    };
    // The default limit is 256Mi: three quarters of it for the old space.
    expect(sidecarOf(aiService({})).env).toContainEqual({
      name: 'NODE_OPTIONS',
      value: `${SIDECAR_NODE_OPTIONS} --max-old-space-size=192`,
    });
    const custom = aiService({});
    custom.spec.sidecar.resources = { requests: { memory: '64Mi' }, limits: { memory: '1Gi' } };
    expect(sidecarOf(custom).env).toContainEqual({
      name: 'NODE_OPTIONS',
      value: `${SIDECAR_NODE_OPTIONS} --max-old-space-size=768`,
    });
    expect(sidecarNodeOptions('128M')).toBe(`${SIDECAR_NODE_OPTIONS} --max-old-space-size=91`);
    expect(sidecarNodeOptions(undefined)).toBe(SIDECAR_NODE_OPTIONS);
    expect(SIDECAR_NODE_OPTIONS).toMatch(/--max-semi-space-size=\d+/);
  });

  it("points the sidecar at the cluster's Consul, with its token and CA mounted as files, per-AiService fields winning", () => {
    const nodeAgent = render(aiService({}));
    const sidecarOf = (objects: KubeObject[]) => {
      const pod = find(objects, 'Deployment')?.spec.template.spec;
      return {
        pod,
        sidecar: [...pod.containers, ...(pod.initContainers ?? [])].find(
          (c: Any) => c.name === 'aimesh-sidecar',
        ),
      };
    };
    expect(sidecarOf(nodeAgent).sidecar.env).toContainEqual({
      name: 'CONSUL_HTTP_ADDR',
      value: '$(HOST_IP):8500',
    });

    const objects = render(
      aiService({ discovery: { consul: { datacenter: 'dc2', tls: { serverName: 'server.dc2.consul' } } } }),
      {
        consul: {
          address: 'https://consul-server.consul.svc:8501',
          datacenter: 'dc1',
          tokenSecretRef: { name: 'consul-token', key: 'token' },
          caSecretRef: { name: 'consul-ca', key: 'tls.crt' },
        },
      },
    );
    const { pod, sidecar } = sidecarOf(objects);
    expect(sidecar.env).toContainEqual({
      name: 'CONSUL_HTTP_ADDR',
      value: 'https://consul-server.consul.svc:8501',
    });
    expect(JSON.stringify(sidecar.env)).not.toContain('consul-token');
    expect(pod.volumes).toContainEqual({
      name: 'aimesh-consul',
      projected: {
        sources: [
          { secret: { name: 'consul-token', items: [{ key: 'token', path: 'token' }] } },
          { secret: { name: 'consul-ca', items: [{ key: 'tls.crt', path: 'ca.crt' }] } },
        ],
      },
    });
    expect(sidecar.volumeMounts).toContainEqual({
      name: 'aimesh-consul',
      mountPath: '/var/run/secrets/aimesh/consul',
      readOnly: true,
    });
    const config = JSON.parse(Object.values(find(objects, 'ConfigMap')?.data ?? {})[0] as string);
    expect(config.discovery.consul).toMatchObject({
      datacenter: 'dc2',
      tokenFile: '/var/run/secrets/aimesh/consul/token',
      caFile: '/var/run/secrets/aimesh/consul/ca.crt',
      tlsServerName: 'server.dc2.consul',
      check: 'ttl',
    });
  });

  it('sets a controller owner reference when asked, and is deterministic without mutating its input', () => {
    const resource = aiService({ replicas: 2, upstreams: [{ name: 'rag-service' }] });
    const before = JSON.stringify(resource);
    const owner = { apiVersion: 'aimesh.io/v1alpha1', kind: 'AiService', name: 'xiaoai', uid: 'u-1' };
    const first = render(resource, { owner });
    expect(
      first.every(
        (o) =>
          o.metadata.ownerReferences?.[0]?.uid === 'u-1' && o.metadata.ownerReferences[0].controller === true,
      ),
    ).toBe(true);
    expect(render(resource, { owner })).toEqual(first);
    expect(JSON.stringify(resource)).toBe(before);
  });
});
