/**
 * aimesh in pods on the one-node cluster (test/env/node.ts), from its own image: the operator
 * installed by Helm, the suoke-life example applied with kubectl, requests and a saga from
 * pod to pod, and a teardown that leaves the machine as it was. One node per machine, so all
 * of it is this one file, run in order.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { buildAimeshImage } from '../../image/build.js';
import { installOperatorChart } from '../env/helm.js';
import { testAppImage } from '../env/images.js';
import { machineState, nodeUnavailableReason, startCluster, type Cluster } from '../env/node.js';
import { waitFor } from '../env/processes.js';
import {
  SUOKE,
  applyInWaves,
  consulInstances,
  fromPod,
  pods,
  suokeLifeForOneNode,
  waitForReadyPods,
  type PodInfo,
} from './helpers.js';

const unavailable = nodeUnavailableReason();
if (unavailable) console.warn(`node tests skipped: ${unavailable}`);
const describeNode = unavailable ? describe.skip : describe;

describeNode('aimesh on a one-node cluster', () => {
  let cluster: Cluster | undefined;
  let before: Record<string, string[]>;
  const example = suokeLifeForOneNode();
  const serviceNames = example.resources.filter((r) => r.kind === 'AiService').map((r) => r.metadata.name);

  const node = (): Cluster => {
    if (!cluster) throw new Error('the cluster did not start');
    return cluster;
  };

  beforeAll(async () => {
    before = machineState();
    const [aimesh, app] = await Promise.all([buildAimeshImage(), testAppImage(example.ports)]);
    cluster = await startCluster();
    await cluster.importImage(aimesh.tarball, aimesh.name);
    await cluster.importImage(app.tarball, app.name, example.images);
  }, 600_000);

  afterAll(async () => {
    await cluster?.stop();
  }, 180_000);

  describe('the operator, installed by Helm from the local image', () => {
    it('runs Ready in pods, talks to the API server from inside, and one replica holds the Lease', async () => {
      const installed = await installOperatorChart(node().kubeconfig);
      expect(installed.stderr).toBe('');
      expect(installed.code).toBe(0);
      const operators = await waitForReadyPods(node(), 'aimesh-system', 2);
      expect(operators.every((p) => p.phase === 'Running')).toBe(true);
      const holder = await leaseHolder();
      expect(operators.map((p) => p.name)).toContain(holder);
    });

    it('hands over the Lease when the leader pod is deleted', async () => {
      const leader = await leaseHolder();
      const deleted = await node().kubectl(['delete', 'pod', '-n', 'aimesh-system', leader, '--wait=false']);
      expect(deleted.code).toBe(0);
      await waitFor(
        'another operator pod to hold the Lease',
        async () => {
          const holder = await leaseHolder().catch(() => '');
          return holder !== '' && holder !== leader;
        },
        90_000,
      );
      await waitForReadyPods(node(), 'aimesh-system', 2);
    });
  });

  describe('the suoke-life example in pods', () => {
    let running: PodInfo[] = [];

    it('applies with kubectl; every AiService has a Ready pod with the sidecar as a native sidecar', async () => {
      const namespace = await node().kubectl(['create', 'namespace', SUOKE]);
      expect(namespace.code).toBe(0);
      running = await applyInWaves(node(), example.resources);
      for (const pod of running) {
        expect(pod.phase).toBe('Running');
        expect(pod.initContainers).toContainEqual(
          expect.objectContaining({ name: 'aimesh-sidecar', restartPolicy: 'Always' }),
        );
      }
      const services = new Set(running.map((p) => p.labels['aimesh.io/service']));
      expect([...services].sort()).toEqual([...serviceNames].sort());
    }, 1_500_000);

    it('registers every pod in Consul with its pod IP, passing its health check', async () => {
      for (const name of serviceNames) {
        const pod = podOf(name);
        await waitFor(
          `${name} passing in Consul at ${pod.ip}`,
          async () =>
            (await consulInstances(node(), name)).some((i) => i.address === pod.ip && i.status === 'passing'),
          90_000,
        );
      }
    });

    it('routes a request from one app pod through its sidecar to another app pod', async () => {
      const gateway = podOf('api-gateway');
      const users = podOf('user-service');
      const response = await fromPod(gateway, 4700, '/v1/invoke/user-service/users/u-1');
      expect(response.status).toBe(200);
      const answer = JSON.parse(response.body) as { pod: string; path: string };
      expect(answer.pod).toBe(users.name);
      expect(answer.path).toBe('/users/u-1');
    });

    it('runs the health-data saga pod to pod', async () => {
      const orchestrator = podOf('health-orchestrator');
      const execution = await runSaga(orchestrator, 'u-1', 'saga-pod-to-pod');
      // The reason comes along, so a failure says why the saga compensated.
      expect(`${execution.state} ${execution.reason ?? ''}`.trim()).toBe('completed');
      expect(execution.steps.map((s) => `${s.name}:${s.status}`)).toEqual([
        'validate_user:succeeded',
        'save_health_data:succeeded',
        'update_blockchain:succeeded',
        'trigger_ai_analysis:succeeded',
      ]);
    });

    it('loses no execution when the orchestrator sidecar is killed with SIGKILL', async () => {
      const orchestrator = podOf('health-orchestrator');
      const sidecar = orchestrator.statuses.find((s) => s.name === 'aimesh-sidecar');
      if (!sidecar?.containerID) throw new Error('no sidecar container id');
      // The first step waits 1.5 s (the test app's slow-<ms> path; the orchestrator's
      // per-try timeout to user-service is 2 s), so the kill lands mid-saga.
      const started = await fromPod(orchestrator, 4702, '/v1/sagas/health-data/executions', {
        method: 'POST',
        body: {
          input: { userId: 'slow-1500', type: 'bp', measurements: [120, 80] },
          idempotencyKey: 'saga-kill-9',
        },
      });
      expect(started.status).toBeLessThan(300);
      const { id } = JSON.parse(started.body) as { id: string };
      process.kill(await node().containerPid(sidecar.containerID), 'SIGKILL');
      await waitFor(
        'the kubelet to restart the sidecar',
        async () => {
          const [pod] = await pods(node(), SUOKE, 'aimesh.io/service=health-orchestrator');
          const restarted = pod?.statuses.find((s) => s.name === 'aimesh-sidecar');
          return (restarted?.restartCount ?? 0) > sidecar.restartCount && pod?.ready === true;
        },
        120_000,
      );
      const [after] = await pods(node(), SUOKE, 'aimesh.io/service=health-orchestrator');
      if (!after) throw new Error('the orchestrator pod is gone');
      const execution = await waitForExecution(after, id);
      // The reason comes along, so a failure says why the saga compensated.
      expect(`${execution.state} ${execution.reason ?? ''}`.trim()).toBe('completed');
      expect(execution.steps.every((s) => s.status === 'succeeded')).toBe(true);
    }, 600_000);

    it('drains and deregisters a deleted pod from Consul before the pod is gone', async () => {
      const pod = podOf('message-bus');
      let deregisteredWhilePodExisted = false;
      // Follow the sidecar's log from before the delete: once the container is gone its log
      // can no longer be read, and the follow ends when the sidecar exits.
      const sidecarLog = node().kubectl(['logs', '-f', '-n', SUOKE, pod.name, '-c', 'aimesh-sidecar']);
      const deleted = await node().kubectl(['delete', 'pod', '-n', SUOKE, pod.name, '--wait=false']);
      expect(deleted.code).toBe(0);
      await waitFor(
        `${pod.name} deregistered from Consul`,
        async () => {
          const registered = (await consulInstances(node(), 'message-bus')).some((i) => i.address === pod.ip);
          if (registered) return false;
          const stillThere = await node().kubectl(['get', 'pod', '-n', SUOKE, pod.name]);
          deregisteredWhilePodExisted = stillThere.code === 0;
          return true;
        },
        60_000,
      );
      expect(deregisteredWhilePodExisted).toBe(true);
      expect((await sidecarLog).stdout).toContain('draining');
    });

    function podOf(service: string): PodInfo {
      const pod = running.find((p) => p.labels['aimesh.io/service'] === service);
      if (!pod) throw new Error(`no running pod for ${service}`);
      return pod;
    }
  });

  describe('teardown', () => {
    it('leaves the machine as it was', async () => {
      await node().stop();
      cluster = undefined;
      expect(machineState()).toEqual(before);
    });
  });

  async function leaseHolder(): Promise<string> {
    const lease = await node().kubectl([
      'get',
      'lease',
      '-n',
      'aimesh-system',
      'aimesh-operator',
      '-o',
      'jsonpath={.spec.holderIdentity}',
    ]);
    if (lease.code !== 0) throw new Error(lease.stderr);
    return lease.stdout.trim();
  }

  interface Execution {
    id: string;
    state: string;
    reason?: string;
    steps: { name: string; status: string }[];
  }

  async function runSaga(orchestrator: PodInfo, userId: string, idempotencyKey: string): Promise<Execution> {
    const started = await fromPod(orchestrator, 4702, '/v1/sagas/health-data/executions', {
      method: 'POST',
      body: { input: { userId, type: 'bp', measurements: [120, 80] }, idempotencyKey },
    });
    if (started.status >= 300) throw new Error(`saga did not start: ${started.status} ${started.body}`);
    return waitForExecution(orchestrator, (JSON.parse(started.body) as { id: string }).id);
  }

  async function waitForExecution(orchestrator: PodInfo, id: string): Promise<Execution> {
    let execution: Execution | undefined;
    await waitFor(
      `saga execution ${id} to finish`,
      async () => {
        const response = await fromPod(orchestrator, 4702, `/v1/executions/${id}?wait=30s`);
        if (response.status !== 200) return false;
        execution = JSON.parse(response.body) as Execution;
        return !['running', 'compensating'].includes(execution.state);
      },
      180_000,
    );
    if (!execution) throw new Error(`no execution ${id}`);
    return execution;
  }
});
