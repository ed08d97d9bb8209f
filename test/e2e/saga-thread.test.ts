import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'undici';
import type { SidecarConfigInput } from '../../api/index.js';
import { ConsulClient } from '../../sidecar/discovery/index.js';
import type { Execution } from '../../sidecar/saga/index.js';
import { freePort, waitFor } from '../env/index.js';
import { sharedEnvironment } from './shared.js';
import { startSidecar, type SidecarProcess } from './sidecar-process.js';
import { calls, startStepService, type StepService } from './step-services.js';

/**
 * The saga engine runs on a thread of its own, not on the event loop of the outbound proxy.
 * The sidecar's main thread is held still by the debugger (the inspector pauses one thread,
 * not the process): the admin port then answers nothing, yet a saga started through the
 * control API runs every step and completes. Once the main thread goes on, /metrics shows
 * the saga thread's series and the main thread's in one exposition, each series once. A
 * thread that dies takes the sidecar down with it, as a crashed process would, after the
 * proxy has drained.
 */
const consulAddress = sharedEnvironment().consul.address;
const consul = new ConsulClient(consulAddress);
/** A name no other test registers in the shared Consul agent. */
const STEP_SERVICE = 'saga-thread-steps';
const SAGA = {
  name: 'thread-check',
  spec: {
    orchestrator: 'thread-orchestrator',
    timeout: '1m',
    steps: [
      {
        name: 'first',
        action: { service: STEP_SERVICE, method: 'POST' as const, path: '/first', timeout: '5s' },
      },
      {
        name: 'second',
        action: {
          service: STEP_SERVICE,
          method: 'POST' as const,
          path: '/second/{{ steps.first.response.body.recordId }}',
          timeout: '5s',
        },
      },
    ],
  },
};

let steps: StepService;
let sidecar: SidecarProcess;
let inspectPort: number;
const storeDir = mkdtempSync(join(tmpdir(), 'aimesh-saga-thread-'));

beforeAll(async () => {
  steps = await startStepService(STEP_SERVICE, consul);
  inspectPort = await freePort();
  const config: Omit<SidecarConfigInput, 'listen'> = {
    service: { name: 'thread-orchestrator', port: 1 },
    discovery: { mode: 'consul', consul: { register: false } },
    upstreams: [{ name: STEP_SERVICE, timeout: '10s' }],
    sagas: [SAGA],
    sagaStore: { kind: 'file', path: storeDir },
  };
  sidecar = await startSidecar('orchestrator-thread', config, consulAddress, {
    nodeArgs: [`--inspect=127.0.0.1:${inspectPort}`],
  });
  await waitFor(
    'the orchestrator sees the step service',
    async () => {
      const dump = (await (await fetch(`${sidecar.admin}/admin/endpoints`)).json()) as {
        endpoints: unknown[];
      }[];
      return dump.every((u) => u.endpoints.length === 1);
    },
    30_000,
  );
});

afterAll(async () => {
  await sidecar?.stop();
  await steps?.stop();
  await consul.close();
  rmSync(storeDir, { recursive: true, force: true });
});

describe('the saga thread', () => {
  it('completes a saga while the main thread is held still, then /metrics shows both threads once', async () => {
    const debug = await inspector(inspectPort);
    await debug.send('Debugger.enable');
    const paused = debug.next('Debugger.paused');
    await debug.send('Debugger.pause');
    // The pause takes the main thread at the next JavaScript it runs: this request makes it run some.
    let healthzAnswered = false;
    const healthz = fetch(`${sidecar.admin}/healthz`).then((response) => {
      healthzAnswered = true;
      return response.status;
    });
    await paused;

    const started = await fetch(`${sidecar.control}/v1/sagas/${SAGA.name}/executions`, {
      method: 'POST',
      headers: { ...sidecar.controlAuth, 'content-type': 'application/json' },
      body: JSON.stringify({ input: {}, idempotencyKey: 'thread-1' }),
    });
    expect(started.status).toBe(201);
    const { id } = (await started.json()) as Execution;
    const execution = (await (
      await fetch(`${sidecar.control}/v1/executions/${id}?wait=30s`, { headers: sidecar.controlAuth })
    ).json()) as Execution;
    expect(execution.state).toBe('completed');
    expect(calls.filter((c) => c.key.startsWith(`${id}:`)).map((c) => c.path)).toEqual([
      '/first',
      expect.stringMatching(/^\/second\/r-\d+$/),
    ]);
    // Every step ran while the main thread was still held: its admin port has not answered.
    expect(healthzAnswered).toBe(false);

    await debug.send('Debugger.resume');
    expect(await healthz).toBe(200);
    debug.close();

    const text = await (await fetch(`${sidecar.admin}/metrics`)).text();
    const names = text.split('\n').filter((line) => line.startsWith('# TYPE '));
    expect(new Set(names).size).toBe(names.length);
    // From the saga thread's registry: the engine's series, and its step calls through its own routes.
    expect(text).toContain(`aimesh_saga_executions_total{saga="${SAGA.name}",state="completed"} 1`);
    expect(text).toMatch(
      new RegExp(
        `aimesh_sidecar_requests_total\\{upstream="${STEP_SERVICE}",endpoint="[^"]+",code="200"\\} 2\\n`,
      ),
    );
    // From the main thread's: the process metrics, and discovery's count of the endpoint.
    expect(text).toMatch(/^aimesh_sidecar_process_start_time_seconds \d+/m);
    expect(text).toContain(`aimesh_sidecar_endpoints{upstream="${STEP_SERVICE}"} 1\n`);
  }, 60_000);

  it('a saga thread that dies ends the sidecar with exit code 1 after a drain, said in the log', async () => {
    const debug = await inspector(inspectPort);
    // The inspector reaches a worker through its parent's session.
    const attached = debug.next('NodeWorker.attachedToWorker');
    await debug.send('NodeWorker.enable', { waitForDebuggerOnStart: false });
    const { sessionId } = (await attached) as { sessionId: string };
    // The worker answers the evaluation, then throws outside any handler, as a bug would.
    const evaluated = debug.next('NodeWorker.receivedMessageFromWorker');
    await debug.send('NodeWorker.sendMessageToWorker', {
      sessionId,
      message: JSON.stringify({
        id: 1,
        method: 'Runtime.evaluate',
        params: { expression: "setTimeout(() => { throw new Error('saga thread test crash'); })" },
      }),
    });
    await evaluated;
    // A process with a debugger attached waits for it to leave before it exits.
    debug.close();
    expect(await sidecar.process.exited).toBe(1);
    const log = readFileSync(sidecar.process.logFile, 'utf8');
    expect(log).toContain('the saga thread died');
    expect(log).toContain('saga thread test crash');
    // It drained before it exited: readiness off, requests in flight finished, then stopped.
    const died = log.indexOf('the saga thread died');
    expect(log.indexOf('"message":"draining"', died)).toBeGreaterThan(died);
    expect(log.indexOf('"message":"stopped"', died)).toBeGreaterThan(
      log.indexOf('"message":"draining"', died),
    );
  }, 60_000);
});

/** A Chrome DevTools Protocol session with the sidecar's main thread (the inspector's one target). */
async function inspector(port: number) {
  const [target] = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as {
    webSocketDebuggerUrl: string;
  }[];
  if (!target) throw new Error('the sidecar has no inspector target');
  const socket = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = reject;
  });
  type Params = Record<string, unknown>;
  let lastId = 0;
  const replies = new Map<number, (reply: { error?: { message: string } }) => void>();
  const events = new Map<string, (params: Params) => void>();
  socket.onmessage = (event) => {
    const message = JSON.parse(String(event.data)) as {
      id?: number;
      method?: string;
      params?: Params;
      error?: { message: string };
    };
    if (message.id !== undefined) replies.get(message.id)?.(message);
    else if (message.method) events.get(message.method)?.(message.params ?? {});
  };
  return {
    send: (method: string, params: Params = {}) =>
      new Promise<void>((resolve, reject) => {
        const id = ++lastId;
        replies.set(id, (reply) =>
          reply.error ? reject(new Error(`${method}: ${reply.error.message}`)) : resolve(),
        );
        socket.send(JSON.stringify({ id, method, params }));
      }),
    next: (method: string) => new Promise<Params>((resolve) => events.set(method, resolve)),
    close: () => socket.close(),
  };
}
