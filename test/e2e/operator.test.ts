import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { join } from 'node:path';
import { REPO_DIR } from '../env/components.js';
import { startControlPlane, waitFor, type ControlPlane } from '../env/index.js';
import { installOperatorIdentity, startOperator, type OperatorProcess } from './operator-process.js';

/**
 * The operator against its own real control plane (so the API server can be restarted
 * and writes counted without other suites' traffic). No kubelet runs, so pods stay
 * Pending and status must say so.
 */
const NS = 'operator-e2e';
const CHILD_KINDS =
  'serviceaccount,configmap,service,deployment,hpa,pdb,destinationrule,virtualservice,peerauthentication,authorizationpolicy';

let cluster: ControlPlane;
/** Acts as the chart's ServiceAccount: the operator runs with the chart's RBAC only. */
let operatorKubeconfig: string;
const operators: OperatorProcess[] = [];

async function json<T>(args: string[]): Promise<T> {
  const result = await cluster.kubectl([...args, '-o', 'json']);
  if (result.code !== 0) throw new Error(result.stderr);
  return JSON.parse(result.stdout) as T;
}

type Obj = {
  kind: string;
  metadata: {
    name: string;
    uid: string;
    resourceVersion: string;
    generation?: number;
    ownerReferences?: { kind: string; name: string; uid: string; controller?: boolean }[];
  };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
};

async function children(): Promise<Obj[]> {
  const list = await json<{ items: Obj[] }>([
    'get',
    CHILD_KINDS,
    '-n',
    NS,
    '-l',
    'app.kubernetes.io/managed-by=aimesh-operator',
  ]);
  return list.items;
}

async function kindsOf(): Promise<string[]> {
  return (await children()).map((o) => `${o.kind}/${o.metadata.name}`).sort();
}

async function apply(yaml: string): Promise<void> {
  const result = await cluster.kubectl(['apply', '--server-side', '--force-conflicts', '-f', '-'], yaml);
  if (result.code !== 0) throw new Error(result.stderr);
}

function aiService(spec: string): string {
  return `apiVersion: aimesh.io/v1alpha1
kind: AiService
metadata: {name: xiaoai, namespace: ${NS}}
spec:
  image: registry.example.com/suoke/xiaoai:1.4.2
${spec}`;
}

const FULL = aiService(`  replicas: 2
  providers:
    - {name: openai, baseUrl: "https://api.openai.com/v1", apiKeySecretRef: {name: openai, key: api-key}}
  upstreams:
    - name: rag
      timeout: 5s
      retries: {attempts: 3, perTryTimeout: 2s}
      circuitBreaker: {consecutiveFailures: 5, openFor: 60s, maxConnections: 100}
      loadBalancer: {strategy: least-request}
  security:
    mtls: STRICT
    allowedCallers: [{serviceAccount: api-gateway, methods: [POST], paths: ["/v1/chat/*"]}]
`);

const EXPECTED_FULL = [
  'AuthorizationPolicy/xiaoai',
  'ConfigMap/xiaoai-sidecar',
  'Deployment/xiaoai',
  'DestinationRule/xiaoai-to-rag',
  'PeerAuthentication/xiaoai',
  'PodDisruptionBudget/xiaoai',
  'Service/xiaoai',
  'ServiceAccount/xiaoai',
  'VirtualService/xiaoai',
];

async function settled(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  await waitFor(what, check, timeoutMs);
}

async function leader(): Promise<OperatorProcess> {
  let found: OperatorProcess | undefined;
  await settled(
    'a leader',
    async () => {
      for (const op of operators) if (op.process.child.exitCode === null && (await op.isLeader())) found = op;
      return found !== undefined;
    },
    60_000,
  );
  return found as OperatorProcess;
}

beforeAll(async () => {
  cluster = await startControlPlane();
  const created = await cluster.kubectl(['create', 'namespace', NS]);
  expect(created.code).toBe(0);
  operatorKubeconfig = await installOperatorIdentity(cluster);
  operators.push(await startOperator(operatorKubeconfig, 'first', join(cluster.dir, 'logs')));
});

afterAll(async () => {
  for (const op of operators) await op.process.stop();
  await cluster?.stop();
});

describe('aimesh operator on a real control plane', () => {
  it('creates every child with a controller owner reference and reports true status', async () => {
    await apply(FULL);
    await settled(
      'all children',
      async () => JSON.stringify(await kindsOf()) === JSON.stringify(EXPECTED_FULL),
    );
    const owner = await json<Obj>(['get', 'aiservice', 'xiaoai', '-n', NS]);
    for (const child of await children()) {
      expect(child.metadata.ownerReferences).toEqual([
        expect.objectContaining({
          kind: 'AiService',
          name: 'xiaoai',
          uid: owner.metadata.uid,
          controller: true,
        }),
      ]);
    }
    await settled('status', async () => {
      const status = (await json<Obj>(['get', 'aiservice', 'xiaoai', '-n', NS])).status ?? {};
      return status.observedGeneration === owner.metadata.generation && status.replicas === 2;
    });
    const { status } = await json<Obj>(['get', 'aiservice', 'xiaoai', '-n', NS]);
    const conditions = status?.conditions as {
      type: string;
      status: string;
      reason: string;
      message: string;
    }[];
    // No kubelet runs in the test control plane: no pod ever becomes available.
    expect(conditions).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          type: 'Ready',
          status: 'False',
          reason: 'ReplicasUnavailable',
          message: '0 of 2 replicas available',
        }),
        expect.objectContaining({ type: 'Degraded', status: 'False', reason: 'AsExpected' }),
      ]),
    );
    const deployment = await json<
      Obj & {
        spec: {
          template: { spec: { containers: { name: string; securityContext: Record<string, unknown> }[] } };
        };
      }
    >(['get', 'deployment', 'xiaoai', '-n', NS]);
    expect(deployment.spec.template.spec.containers.map((c) => c.name)).toEqual(['app', 'aimesh-sidecar']);
    for (const container of deployment.spec.template.spec.containers) {
      expect(container.securityContext).toMatchObject({ runAsNonRoot: true, readOnlyRootFilesystem: true });
    }
  });

  it('follows spec changes and deletes children that are no longer wanted', async () => {
    await apply(
      aiService(
        '  autoscaling: {minReplicas: 2, maxReplicas: 6}\n  upstreams: []\n  security: {mtls: PERMISSIVE}\n',
      ),
    );
    await settled('HPA in, per-upstream policies and AuthorizationPolicy out', async () => {
      const kinds = await kindsOf();
      return (
        kinds.includes('HorizontalPodAutoscaler/xiaoai') &&
        !kinds.includes('DestinationRule/xiaoai-to-rag') &&
        !kinds.includes('AuthorizationPolicy/xiaoai')
      );
    });
    const peer = await json<Obj>(['get', 'peerauthentication', 'xiaoai', '-n', NS]);
    expect(peer.spec).toMatchObject({ mtls: { mode: 'PERMISSIVE' } });

    await apply(aiService('  replicas: 1\n'));
    await settled('HPA and PDB gone with one fixed replica', async () => {
      const kinds = await kindsOf();
      return (
        !kinds.includes('HorizontalPodAutoscaler/xiaoai') && !kinds.includes('PodDisruptionBudget/xiaoai')
      );
    });
    await settled(
      'deployment at one replica',
      async () => (await json<Obj>(['get', 'deployment', 'xiaoai', '-n', NS])).spec?.replicas === 1,
    );
  });

  it('restores a child edited or deleted by hand', async () => {
    const patched = await cluster.kubectl([
      'patch',
      'deployment',
      'xiaoai',
      '-n',
      NS,
      '--type=merge',
      '-p',
      '{"spec":{"replicas":7}}',
    ]);
    expect(patched.code).toBe(0);
    await settled(
      'replicas restored',
      async () => (await json<Obj>(['get', 'deployment', 'xiaoai', '-n', NS])).spec?.replicas === 1,
    );

    const deleted = await cluster.kubectl(['delete', 'service', 'xiaoai', '-n', NS]);
    expect(deleted.code).toBe(0);
    await settled('service recreated', async () => (await kindsOf()).includes('Service/xiaoai'));
  });

  it('writes nothing after a restart when nothing changed', async () => {
    const before = Object.fromEntries(
      (await children()).map((o) => [`${o.kind}/${o.metadata.name}`, o.metadata.resourceVersion]),
    );
    const resourceBefore = (await json<Obj>(['get', 'aiservice', 'xiaoai', '-n', NS])).metadata
      .resourceVersion;
    const first = operators.pop() as OperatorProcess;
    await first.process.stop();
    const restarted = await startOperator(operatorKubeconfig, 'restarted', join(cluster.dir, 'logs'));
    operators.push(restarted);
    await settled(
      'restarted operator leads and has reconciled',
      async () =>
        (await restarted.isLeader()) && (await restarted.counter('aimesh_operator_reconciles_total')) >= 1,
      60_000,
    );
    await new Promise((r) => setTimeout(r, 3000));
    const writes = await restarted.counter(
      'aimesh_operator_api_writes_total',
      (labels) => !labels.includes('kind="Lease"'),
    );
    expect(writes).toBe(0);
    const after = Object.fromEntries(
      (await children()).map((o) => [`${o.kind}/${o.metadata.name}`, o.metadata.resourceVersion]),
    );
    expect(after).toEqual(before);
    expect((await json<Obj>(['get', 'aiservice', 'xiaoai', '-n', NS])).metadata.resourceVersion).toBe(
      resourceBefore,
    );
  });

  it('runs only on the leader, and a standby takes over when the leader is killed', async () => {
    operators.push(await startOperator(operatorKubeconfig, 'standby', join(cluster.dir, 'logs')));
    const current = await leader();
    const standby = operators.find((o) => o !== current) as OperatorProcess;
    expect(await standby.isLeader()).toBe(false);
    expect(await standby.counter('aimesh_operator_reconciles_total')).toBe(0);

    current.process.child.kill('SIGKILL');
    await current.process.exited;
    operators.splice(operators.indexOf(current), 1);
    await settled('standby becomes leader', () => standby.isLeader(), 60_000);

    await apply(aiService('  replicas: 3\n'));
    await settled(
      'new leader reconciles',
      async () => (await json<Obj>(['get', 'deployment', 'xiaoai', '-n', NS])).spec?.replicas === 3,
    );
  });

  it('reconnects and converges after the API server restarts', async () => {
    await cluster.restartApiServer();
    await apply(aiService('  replicas: 2\n  security: {allowedCallers: [{serviceAccount: soer}]}\n'));
    await settled(
      'converged after restart',
      async () => {
        const kinds = await kindsOf();
        const deployment = await json<Obj>(['get', 'deployment', 'xiaoai', '-n', NS]);
        return kinds.includes('AuthorizationPolicy/xiaoai') && deployment.spec?.replicas === 2;
      },
      90_000,
    );
  });

  it('leaves children to garbage collection when the AiService is deleted', async () => {
    const deleted = await cluster.kubectl(['delete', 'aiservice', 'xiaoai', '-n', NS]);
    expect(deleted.code).toBe(0);
    await settled('children collected', async () => (await children()).length === 0, 60_000);
  });
});

describe('Sagas on a real control plane', () => {
  const SAGA_NS = 'saga-e2e';
  const service = (
    name: string,
    callers = '[{serviceAccount: api-gateway}]',
  ) => `apiVersion: aimesh.io/v1alpha1
kind: AiService
metadata: {name: ${name}, namespace: ${SAGA_NS}}
spec:
  image: registry.example.com/suoke/${name}:1.0.0
  replicas: 1
  security: {allowedCallers: ${callers}}
`;
  const sagaStatus = async (name: string) =>
    (await json<Obj>(['get', 'saga', name, '-n', SAGA_NS])).status as
      | {
          observedGeneration?: number;
          conditions?: { type: string; status: string; reason: string; message: string }[];
        }
      | undefined;

  beforeAll(async () => {
    expect((await cluster.kubectl(['create', 'namespace', SAGA_NS])).code).toBe(0);
  });

  it('reports a missing orchestrator, then hands the definitions to its sidecars and grants it its steps', async () => {
    const saga = (await import('node:fs')).readFileSync(
      join(REPO_DIR, 'examples', 'suoke-life', 'health-data-saga.yaml'),
      'utf8',
    );
    await apply(saga.replace('namespace: suoke-life', `namespace: ${SAGA_NS}`));
    await settled(
      'OrchestratorNotFound',
      async () => (await sagaStatus('health-data'))?.conditions?.[0]?.reason === 'OrchestratorNotFound',
    );
    expect((await sagaStatus('health-data'))?.conditions?.[0]?.message).toContain(
      'no AiService "health-orchestrator"',
    );

    await apply(service('health-orchestrator'));
    await settled(
      'StepServiceNotFound',
      async () => (await sagaStatus('health-data'))?.conditions?.[0]?.reason === 'StepServiceNotFound',
    );
    expect((await sagaStatus('health-data'))?.conditions?.[0]?.message).toContain('"blockchain-service"');

    for (const name of ['user-service', 'health-data-service', 'blockchain-service', 'xiaoai-service'])
      await apply(service(name));
    // Every AiService it names exists now; it is Ready only once its orchestrator is, and
    // with no kubelet here the orchestrator's pod never runs: the status says exactly that.
    await settled(
      'Saga waits for its orchestrator',
      async () => (await sagaStatus('health-data'))?.conditions?.[0]?.reason === 'OrchestratorNotReady',
      60_000,
    );
    expect((await sagaStatus('health-data'))?.conditions?.[0]).toMatchObject({
      status: 'False',
      message: expect.stringContaining('0 of 1 replicas available'),
    });
    expect((await sagaStatus('health-data'))?.observedGeneration).toBe(1);

    const configMap = await json<Obj & { data: Record<string, string> }>([
      'get',
      'configmap',
      'health-orchestrator-sidecar',
      '-n',
      SAGA_NS,
    ]);
    const config = JSON.parse(Object.values(configMap.data)[0] as string) as {
      sagas: { name: string; spec: { steps: { name: string }[] } }[];
      upstreams: { name: string }[];
    };
    expect(config.sagas.map((s) => s.name)).toEqual(['health-data']);
    expect(config.sagas[0]?.spec.steps.map((s) => s.name)).toEqual([
      'validate_user',
      'save_health_data',
      'update_blockchain',
      'trigger_ai_analysis',
    ]);
    expect(config.upstreams.map((u) => u.name).sort()).toEqual([
      'blockchain-service',
      'health-data-service',
      'user-service',
      'xiaoai-service',
    ]);

    await settled('blockchain-service grants the orchestrator its steps', async () => {
      const policy = await json<Obj>(['get', 'authorizationpolicy', 'blockchain-service', '-n', SAGA_NS]);
      return JSON.stringify(policy.spec).includes('sa/health-orchestrator');
    });
    const policy = await json<Obj>(['get', 'authorizationpolicy', 'blockchain-service', '-n', SAGA_NS]);
    expect((policy.spec as { rules: unknown[] }).rules).toEqual(
      expect.arrayContaining([
        {
          from: [{ source: { principals: [`cluster.local/ns/${SAGA_NS}/sa/health-orchestrator`] } }],
          to: [{ operation: { methods: ['POST'], paths: ['/anchors', '/anchors/*'] } }],
        },
      ]),
    );
  });

  it('reports a saga the API server accepted but aimesh cannot run (a template reading a later step)', async () => {
    const bad = (await import('node:fs')).readFileSync(
      join(REPO_DIR, 'examples', 'invalid', 'template-reads-later-step.yaml'),
      'utf8',
    );
    await apply(bad.replace('namespace: default', `namespace: ${SAGA_NS}`));
    await settled(
      'InvalidSpec',
      async () => (await sagaStatus('bad-saga'))?.conditions?.[0]?.reason === 'InvalidSpec',
    );
    expect((await sagaStatus('bad-saga'))?.conditions?.[0]?.message).toContain(
      'reads step "notify", which has not run yet',
    );
  });
});

describe('native sidecar', () => {
  it('the API server keeps the sidecar as a native sidecar (init container with restartPolicy Always)', async () => {
    await apply(
      `apiVersion: aimesh.io/v1alpha1
kind: AiService
metadata: {name: native-demo, namespace: ${NS}}
spec:
  image: registry.example.com/suoke/native-demo:1.0.0
  replicas: 1
  sidecar: {native: true}
`,
    );
    await settled('deployment created', async () => (await kindsOf()).includes('Deployment/native-demo'));
    const deployment = await json<
      Obj & {
        spec: {
          template: {
            spec: {
              containers: { name: string }[];
              initContainers?: { name: string; restartPolicy?: string }[];
            };
          };
        };
      }
    >(['get', 'deployment', 'native-demo', '-n', NS]);
    expect(deployment.spec.template.spec.containers.map((c) => c.name)).toEqual(['app']);
    expect(deployment.spec.template.spec.initContainers).toEqual([
      expect.objectContaining({ name: 'aimesh-sidecar', restartPolicy: 'Always' }),
    ]);
  });
});

describe('a stock image with the pod escape hatch', () => {
  it('applies the overrides, and stays Progressing while no replica is available', async () => {
    await apply(`apiVersion: aimesh.io/v1alpha1
kind: AiService
metadata: {name: web, namespace: ${NS}, labels: {team: web}}
spec:
  image: nginx:1.27
  port: 8081
  replicas: 2
  pod:
    securityContext: {runAsNonRoot: false}
    volumes: [{name: cache, emptyDir: {sizeLimit: 64Mi}}]
    app:
      command: [nginx]
      args: ['-g', 'daemon off;']
      securityContext: {readOnlyRootFilesystem: false, runAsNonRoot: false}
      volumeMounts: [{name: cache, mountPath: /var/cache/nginx}]
`);
    await settled('deployment created', async () => (await kindsOf()).includes('Deployment/web'));
    const deployment = await json<
      Obj & {
        metadata: { labels: Record<string, string> };
        spec: {
          template: {
            spec: {
              securityContext: Record<string, unknown>;
              volumes: { name: string }[];
              containers: Record<string, unknown>[];
            };
          };
        };
      }
    >(['get', 'deployment', 'web', '-n', NS]);
    expect(deployment.metadata.labels.team).toBe('web');
    const pod = deployment.spec.template.spec;
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: false });
    expect(pod.volumes.map((v) => v.name)).toContain('cache');
    const app = pod.containers.find((c) => c.name === 'app');
    expect(app).toMatchObject({
      command: ['nginx'],
      args: ['-g', 'daemon off;'],
      securityContext: expect.objectContaining({
        readOnlyRootFilesystem: false,
        allowPrivilegeEscalation: false,
      }),
    });
    // No kubelet here, so no replica is ever available: the status must not claim a finished rollout.
    await settled('status reported', async () => {
      const got = await json<Obj>(['get', 'aiservice', 'web', '-n', NS]);
      const conditions = (got.status?.conditions ?? []) as { type: string; status: string }[];
      return conditions.some((c) => c.type === 'Progressing' && c.status === 'True');
    });
    const got = await json<Obj>(['get', 'aiservice', 'web', '-n', NS]);
    expect(got.status?.conditions).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ type: 'Ready', status: 'False' }),
        expect.objectContaining({ type: 'Progressing', status: 'True', reason: 'RollingOut' }),
      ]),
    );
  });
});
