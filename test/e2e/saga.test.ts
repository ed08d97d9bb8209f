import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { validateResource, type Saga, type SagaSpec, type SidecarConfigInput } from '../../api/index.js';
import { ConsulClient } from '../../sidecar/discovery/index.js';
import * as grpc from '@grpc/grpc-js';
import { loadSagaGrpc, type Execution } from '../../sidecar/saga/index.js';
import { REPO_DIR } from '../env/components.js';
import { waitFor } from '../env/index.js';
import { sharedEnvironment } from './shared.js';
import { startSidecar, type SidecarProcess } from './sidecar-process.js';
import { calls, startStepService, type StepService } from './step-services.js';

/**
 * The saga engine in real sidecar processes, against real HTTP step services found
 * through the shared Consul agent: the suoke-life health-data saga and the chat-migration
 * rollback, failures and compensation order, retries, timeouts, idempotent starts, bad
 * requests, and kill -9 of the orchestrator with 200 executions in flight, for both stores.
 */
const consulAddress = sharedEnvironment().consul.address;
const consul = new ConsulClient(consulAddress);
const services = new Map<string, StepService>();
const orchestrators: SidecarProcess[] = [];
const storeDir = mkdtempSync(join(tmpdir(), 'aimesh-saga-store-'));

function sagaSpec(file: string, name: string): { name: string; spec: SagaSpec } {
  const result = validateResource(parse(readFileSync(join(REPO_DIR, 'examples', file), 'utf8')));
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return { name, spec: (result.resource as Saga).spec };
}

const healthData = sagaSpec('suoke-life/health-data-saga.yaml', 'health-data');
const sessionMigration = sagaSpec('chat-migration/session-migration-saga.yaml', 'session-migration');
const quickRetries = (spec: SagaSpec): SagaSpec => ({
  ...spec,
  steps: spec.steps.map((s) => ({
    ...s,
    retry: { ...s.retry, backoff: { initial: '50ms', multiplier: 2, max: '200ms' } },
  })),
});
const SAGAS = [
  { name: 'health-data', spec: quickRetries(healthData.spec) },
  { name: 'health-data-short', spec: { ...quickRetries(healthData.spec), timeout: '1s' } },
  { name: 'session-migration', spec: quickRetries(sessionMigration.spec) },
  { name: 'unknown-step', spec: unknownStepSpec() },
];
/** validate_user, then a step whose service this orchestrator has no route to. */
function unknownStepSpec(): SagaSpec {
  const base = quickRetries(healthData.spec);
  const [validate, save] = base.steps as [SagaSpec['steps'][number], SagaSpec['steps'][number]];
  return {
    ...base,
    steps: [
      validate,
      {
        name: 'call_nobody',
        action: { service: 'no-such-service', method: 'POST', path: '/x', headers: {}, timeout: '5s' },
        retry: save.retry,
        pivot: false,
      },
    ],
  };
}

const STEP_SERVICES = [
  'user-service',
  'health-data-service',
  'blockchain-service',
  'xiaoai-service',
  'legacy-sessions',
  'session-store',
  'chat',
];

function orchestratorConfig(
  store: SidecarConfigInput['sagaStore'],
  observability?: SidecarConfigInput['observability'],
): Omit<SidecarConfigInput, 'listen'> {
  return {
    ...(observability ? { observability } : {}),
    service: { name: 'health-orchestrator', port: 1 },
    discovery: { mode: 'consul', consul: { register: false } },
    upstreams: STEP_SERVICES.map((name) => ({ name, timeout: '10s' })),
    sagas: SAGAS,
    sagaStore: store,
  };
}

async function startOrchestrator(
  name: string,
  store: SidecarConfigInput['sagaStore'],
  observability?: SidecarConfigInput['observability'],
): Promise<SidecarProcess> {
  const sidecar = await startSidecar(name, orchestratorConfig(store, observability), consulAddress);
  orchestrators.push(sidecar);
  await waitFor(
    `${name} sees every step service`,
    async () => {
      const dump = (await (await fetch(`${sidecar.admin}/admin/endpoints`)).json()) as {
        endpoints: unknown[];
      }[];
      return dump.every((u) => u.endpoints.length === 1);
    },
    30_000,
  );
  return sidecar;
}

async function startExecution(
  orchestrator: SidecarProcess,
  saga: string,
  input: unknown,
  idempotencyKey: string,
): Promise<{ status: number; execution: Execution }> {
  const response = await fetch(`${orchestrator.control}/v1/sagas/${saga}/executions`, {
    method: 'POST',
    headers: { ...orchestrator.controlAuth, 'content-type': 'application/json' },
    body: JSON.stringify({ input, idempotencyKey }),
  });
  return { status: response.status, execution: (await response.json()) as Execution };
}

async function finished(orchestrator: SidecarProcess, id: string): Promise<Execution> {
  return (await (
    await fetch(`${orchestrator.control}/v1/executions/${id}?wait=30s`, { headers: orchestrator.controlAuth })
  ).json()) as Execution;
}

async function unfinished(orchestrator: SidecarProcess, keyPrefix: string): Promise<number> {
  const all = (await (
    await fetch(`${orchestrator.control}/v1/executions`, { headers: orchestrator.controlAuth })
  ).json()) as Execution[];
  return all.filter(
    (e) => e.idempotencyKey.startsWith(keyPrefix) && !['completed', 'compensated'].includes(e.state),
  ).length;
}

function callsOf(executionId: string): string[] {
  return calls
    .filter((c) => c.key.startsWith(`${executionId}:`))
    .map((c) => `${c.service} ${c.method} ${c.path.replace(/[0-9]+/g, 'N')}`);
}

function duplicatedEffects(): string[] {
  return [...services.values()].flatMap((s) =>
    [...s.effects.entries()].filter(([, n]) => n !== 1).map(([key, n]) => `${s.name} ${key} × ${n}`),
  );
}

beforeAll(async () => {
  for (const name of STEP_SERVICES) services.set(name, await startStepService(name, consul));
});

afterAll(async () => {
  for (const orchestrator of orchestrators) await orchestrator.stop();
  for (const service of services.values()) await service.stop();
  await consul.close();
  rmSync(storeDir, { recursive: true, force: true });
});

describe('saga engine, file store', () => {
  let orchestrator: SidecarProcess;
  beforeAll(async () => {
    orchestrator = await startOrchestrator('orchestrator-file', {
      kind: 'file',
      path: join(storeDir, 'file'),
    });
  });

  it('runs the health-data saga to completion, each step once, with templates filled in', async () => {
    const { status, execution } = await startExecution(
      orchestrator,
      'health-data',
      { userId: 'u-1', type: 'bp', measurements: [120, 80] },
      'happy-1',
    );
    expect(status).toBe(201);
    const done = await finished(orchestrator, execution.id);
    expect(done.state).toBe('completed');
    expect(callsOf(execution.id)).toEqual([
      'user-service POST /users/u-N/validate',
      'health-data-service POST /records',
      'blockchain-service POST /anchors',
      'xiaoai-service POST /analysis/health-records',
    ]);
    const saved = done.steps.find((s) => s.name === 'save_health_data')?.response?.body as {
      received: Record<string, unknown>;
    };
    expect(saved.received).toEqual({
      userId: 'u-1',
      type: 'bp',
      measurements: [120, 80],
      validatedBy: expect.stringMatching(/^v-/),
    });
  });

  it('starts the saga engine when a reload brings the first Saga, and runs it', async () => {
    // An orchestrator whose Saga was applied after it started gets it by a config reload.
    const store = { kind: 'file' as const, path: mkdtempSync(join(tmpdir(), 'aimesh-saga-late-')) };
    const withoutSagas = { ...orchestratorConfig(store), sagas: [] };
    const late = await startSidecar('orchestrator-late', withoutSagas, consulAddress);
    orchestrators.push(late);
    const before = await fetch(`${late.control}/v1/executions`, { headers: late.controlAuth }).catch(
      () => undefined,
    );
    expect(before).toBeUndefined();
    await late.reload({ ...withoutSagas, sagas: [SAGAS[0] as (typeof SAGAS)[number]] });
    await waitFor(
      'the saga control API after the reload',
      async () =>
        (await fetch(`${late.control}/v1/executions`, { headers: late.controlAuth }).catch(() => undefined))
          ?.ok === true,
    );
    const { status, execution } = await startExecution(
      late,
      'health-data',
      { userId: 'u-late', type: 'bp', measurements: [1, 2] },
      'late-1',
    );
    expect(status).toBe(201);
    expect((await finished(late, execution.id)).state).toBe('completed');
  });

  it('a repeated start with the same key returns the same execution and runs nothing twice', async () => {
    const first = await startExecution(
      orchestrator,
      'health-data',
      { userId: 'u-2', type: 'hr', measurements: [] },
      'same-key',
    );
    const again = await startExecution(
      orchestrator,
      'health-data',
      { userId: 'u-2', type: 'hr', measurements: [] },
      'same-key',
    );
    expect(first.status).toBe(201);
    expect(again.status).toBe(200);
    expect(again.execution.id).toBe(first.execution.id);
    await finished(orchestrator, first.execution.id);
    expect(callsOf(first.execution.id)).toHaveLength(4);
  });

  it('a failure at update_blockchain compensates save_health_data, then validate_user', async () => {
    (services.get('blockchain-service') as StepService).behaviour.failures = [
      { path: /^\/anchors$/, status: 422, times: 1 },
    ];
    const { execution } = await startExecution(
      orchestrator,
      'health-data',
      { userId: 'u-3', type: 'bp', measurements: [] },
      'fails-1',
    );
    const done = await finished(orchestrator, execution.id);
    expect(done.state).toBe('compensated');
    expect(done.reason).toContain('update_blockchain');
    expect(callsOf(execution.id)).toEqual([
      'user-service POST /users/u-N/validate',
      'health-data-service POST /records',
      'blockchain-service POST /anchors',
      'health-data-service DELETE /records/r-N',
      'user-service POST /users/u-N/release',
    ]);
  });

  it('retries a flaky step with backoff until it succeeds', async () => {
    (services.get('blockchain-service') as StepService).behaviour.failures = [
      { path: /^\/anchors$/, status: 503, times: 2 },
    ];
    const { execution } = await startExecution(
      orchestrator,
      'health-data',
      { userId: 'u-4', type: 'bp', measurements: [] },
      'flaky-1',
    );
    const done = await finished(orchestrator, execution.id);
    expect(done.state).toBe('completed');
    const anchors = calls.filter((c) => c.key === `${execution.id}:update_blockchain:action`);
    expect(anchors).toHaveLength(3);
    // Backoff: 50 ms then 100 ms (±jitter), not immediate.
    expect((anchors[2] as { at: number }).at - (anchors[0] as { at: number }).at).toBeGreaterThanOrEqual(70);
    expect(done.steps.find((s) => s.name === 'update_blockchain')?.attempts).toBe(3);
  });

  it('a saga past its timeout compensates', async () => {
    (services.get('blockchain-service') as StepService).behaviour.delayMs = 1500;
    try {
      const { execution } = await startExecution(
        orchestrator,
        'health-data-short',
        { userId: 'u-5', type: 'bp', measurements: [] },
        'slow-1',
      );
      const done = await finished(orchestrator, execution.id);
      expect(done.state).toBe('compensated');
      expect(done.reason).toBe('timed out');
      expect(callsOf(execution.id).slice(-3)).toEqual([
        'blockchain-service POST /anchors/a-N/revoke',
        'health-data-service DELETE /records/r-N',
        'user-service POST /users/u-N/release',
      ]);
    } finally {
      (services.get('blockchain-service') as StepService).behaviour.delayMs = 0;
    }
  });

  it('runs the chat-migration saga, and rolls a failed import back with its compensations', async () => {
    const ok = await startExecution(orchestrator, 'session-migration', { userId: 'chat-1' }, 'migrate-1');
    expect((await finished(orchestrator, ok.execution.id)).state).toBe('completed');
    (services.get('session-store') as StepService).behaviour.failures = [
      { path: /^\/sessions\/import$/, status: 400, times: 1 },
    ];
    const failed = await startExecution(orchestrator, 'session-migration', { userId: 'chat-2' }, 'migrate-2');
    const done = await finished(orchestrator, failed.execution.id);
    expect(done.state).toBe('compensated');
    expect(callsOf(failed.execution.id).slice(-2)).toEqual([
      'session-store POST /sessions/import',
      'legacy-sessions POST /internal/sessions/chat-N/unfreeze',
    ]);
  });

  it('bad input gets a clear error and leaves nothing behind', async () => {
    const before = (
      (await (
        await fetch(`${orchestrator.control}/v1/executions`, { headers: orchestrator.controlAuth })
      ).json()) as unknown[]
    ).length;
    const unknown = await startExecution(orchestrator, 'no-such-saga', {}, 'k');
    expect(unknown.status).toBe(404);
    expect((unknown.execution as unknown as { error: string }).error).toContain('no saga "no-such-saga"');
    const malformed = await fetch(`${orchestrator.control}/v1/sagas/health-data/executions`, {
      method: 'POST',
      headers: orchestrator.controlAuth,
      body: '{"input": ',
    });
    expect(malformed.status).toBe(400);
    expect(((await malformed.json()) as { error: string }).error).toMatch(/^request body is not valid JSON/);
    const noKey = await fetch(`${orchestrator.control}/v1/sagas/health-data/executions`, {
      method: 'POST',
      headers: orchestrator.controlAuth,
      body: '{"input": {}}',
    });
    expect(noKey.status).toBe(400);
    expect(((await noKey.json()) as { error: string }).error).toContain('idempotencyKey is required');
    expect(
      (
        (await (
          await fetch(`${orchestrator.control}/v1/executions`, { headers: orchestrator.controlAuth })
        ).json()) as unknown[]
      ).length,
    ).toBe(before);

    // A step service this orchestrator cannot reach: the step fails for good, the saga rolls back.
    const unknownStep = await startExecution(
      orchestrator,
      'unknown-step',
      { userId: 'u-9' },
      'unknown-step-1',
    );
    const rolledBack = await finished(orchestrator, unknownStep.execution.id);
    expect(rolledBack.state).toBe('compensated');
    expect(rolledBack.reason).toContain('"no-such-service" is not an upstream of this service');
    expect(callsOf(unknownStep.execution.id)).toEqual([
      'user-service POST /users/u-N/validate',
      'user-service POST /users/u-N/release',
    ]);

    // Input the templates cannot read: the first step cannot be built, nothing is called.
    const { execution } = await startExecution(orchestrator, 'health-data', { type: 'bp' }, 'no-user');
    const done = await finished(orchestrator, execution.id);
    expect(done.state).toBe('compensated');
    expect(done.reason).toContain('placeholder "{{ input.userId }}" reads a field that is not there');
    expect(callsOf(execution.id)).toEqual([]);
  });

  it('kill -9 with 200 executions in flight: a restart finishes every one, with no duplicated effect', async () => {
    for (const service of services.values()) service.behaviour.delayMs = 300;
    try {
      const started = await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          startExecution(
            orchestrator,
            'health-data',
            { userId: `crash-${i}`, type: 'bp', measurements: [] },
            `crash-file-${i}`,
          ),
        ),
      );
      await new Promise((r) => setTimeout(r, 400));
      orchestrator.process.child.kill('SIGKILL');
      await orchestrator.process.exited;
      orchestrator = await startOrchestrator('orchestrator-file-2', {
        kind: 'file',
        path: join(storeDir, 'file'),
      });
      const states = await Promise.all(
        started.map(({ execution }) => finished(orchestrator, execution.id).then((e) => e.state)),
      );
      expect(states.filter((s) => s !== 'completed')).toEqual([]);
      expect(duplicatedEffects()).toEqual([]);
      const metrics = await (await fetch(`${orchestrator.admin}/metrics`)).text();
      expect(metrics).toMatch(/aimesh_saga_recovered_total\{saga="health-data"\} (1[5-9][0-9]|200)/);
    } finally {
      for (const service of services.values()) service.behaviour.delayMs = 0;
    }
  });
});

describe('saga control API authentication', () => {
  it('answers 401 with the error body to a call without the token or with another one, and serves the token', async () => {
    const orchestrator = await startOrchestrator('orchestrator-auth', {
      kind: 'file',
      path: join(storeDir, 'auth'),
    });
    expect(orchestrator.controlAuth.authorization).toMatch(/^Bearer [A-Za-z0-9_-]{43}$/);
    const start = { input: { userId: 'a-1', type: 'bp', measurements: [] }, idempotencyKey: 'auth-1' };
    const calls: [string, string, RequestInit][] = [
      ['POST', '/v1/sagas/health-data/executions', { body: JSON.stringify(start) }],
      ['GET', '/v1/executions', {}],
      ['GET', '/v1/executions/some-id?wait=1s', {}],
      ['POST', '/v1/executions/some-id/cancel', {}],
      ['GET', '/v1/executions/some-id/events', {}],
      ['GET', '/v1/no-such-endpoint', {}],
    ];
    for (const authorization of [undefined, 'Bearer not-the-token', `Basic ${btoa('a:b')}`, 'Bearer']) {
      for (const [method, path, init] of calls) {
        const response = await fetch(`${orchestrator.control}${path}`, {
          ...init,
          method,
          headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) },
        });
        expect([method, path, authorization, response.status]).toEqual([method, path, authorization, 401]);
        expect(response.headers.get('www-authenticate')).toBe('Bearer realm="aimesh-control"');
        expect(await response.json()).toEqual({
          code: 'input.unauthenticated',
          error: expect.stringContaining('authorization: Bearer <token>'),
        });
      }
    }
    // Nothing was started by the refused calls; the right token starts and reads it.
    const listed = await fetch(`${orchestrator.control}/v1/executions`, {
      headers: orchestrator.controlAuth,
    });
    expect(listed.status).toBe(200);
    expect(await listed.json()).toEqual([]);
    const { status, execution } = await startExecution(orchestrator, 'health-data', start.input, 'auth-1');
    expect(status).toBe(201);
    expect((await finished(orchestrator, execution.id)).state).toBe('completed');
    // The probes on the admin port stay open to the kubelet.
    expect((await fetch(`${orchestrator.admin}/healthz`)).status).toBe(200);

    // A reload that names another token file applies at once, and the old token stops working.
    const rotated = join(storeDir, 'auth-rotated-token');
    writeFileSync(rotated, 'rotated-token-0123456789\n');
    await orchestrator.reload({
      ...orchestratorConfig({ kind: 'file', path: join(storeDir, 'auth') }),
      controlAuth: { tokenFile: rotated },
    });
    const withToken = (authorization?: string) =>
      fetch(`${orchestrator.control}/v1/executions`, { headers: authorization ? { authorization } : {} });
    await waitFor(
      'the reloaded token file applies',
      async () => (await withToken('Bearer rotated-token-0123456789')).status === 200,
    );
    expect((await withToken(orchestrator.controlAuth.authorization)).status).toBe(401);
  });

  it('refuses to start when the configured token file is missing, naming the file', async () => {
    const missing = join(storeDir, 'no-such-dir', 'token');
    await expect(
      startSidecar(
        'orchestrator-no-token',
        {
          ...orchestratorConfig({ kind: 'file', path: join(storeDir, 'no-token') }),
          controlAuth: { tokenFile: missing },
        },
        consulAddress,
      ),
    ).rejects.toThrow(`cannot read the saga control API token file ${missing}`);
  });
});

describe('saga gRPC API', () => {
  it('starts, waits for, watches and refuses executions over gRPC', async () => {
    const orchestrator = await startOrchestrator('orchestrator-grpc', {
      kind: 'file',
      path: join(storeDir, 'grpc'),
    });
    const Client = grpc.makeClientConstructor((await loadSagaGrpc()).sagaServiceDefinition(), 'Sagas');
    const client = new Client(
      orchestrator.controlGrpc,
      grpc.credentials.createInsecure(),
    ) as unknown as Record<
      string,
      (
        request: unknown,
        metadata: grpc.Metadata,
        callback: (error: grpc.ServiceError | null, response: never) => void,
      ) => void
    > & {
      Watch: (request: unknown, metadata: grpc.Metadata) => grpc.ClientReadableStream<{ state: string }>;
      close: () => void;
    };
    const metadata = (authorization?: string) => {
      const m = new grpc.Metadata();
      if (authorization) m.set('authorization', authorization);
      return m;
    };
    const authorized = metadata(orchestrator.controlAuth.authorization);
    const unary = <T>(method: string, request: unknown, meta = authorized) =>
      new Promise<{ error: grpc.ServiceError | null; response: T }>((resolve) =>
        (
          client[method] as (
            r: unknown,
            m: grpc.Metadata,
            cb: (e: grpc.ServiceError | null, r: T) => void,
          ) => void
        ).call(client, request, meta, (error, response) => resolve({ error, response })),
      );
    try {
      const request = {
        saga: 'health-data',
        input_json: JSON.stringify({ userId: 'g-1', type: 'bp', measurements: [] }),
        idempotency_key: 'grpc-1',
      };
      const started = await unary<{ created: boolean; execution: { id: string } }>('Start', request);
      expect(started.error).toBeNull();
      expect(started.response.created).toBe(true);
      const states: string[] = [];
      await new Promise<void>((resolve, reject) => {
        const stream = client.Watch({ id: started.response.execution.id }, authorized);
        stream.on('data', (e: { state: string }) => states.push(e.state));
        stream.on('end', () => resolve());
        stream.on('error', reject);
      });
      expect(states.at(-1)).toBe('completed');
      const waited = await unary<{ state: string; json: string }>('Wait', {
        id: started.response.execution.id,
        timeout_ms: 5000,
      });
      expect(waited.response.state).toBe('completed');
      expect((JSON.parse(waited.response.json) as Execution).steps).toHaveLength(4);
      const again = await unary<{ created: boolean; execution: { id: string } }>('Start', request);
      expect(again.response).toMatchObject({
        created: false,
        execution: { id: started.response.execution.id },
      });
      const unknown = await unary('Start', { ...request, saga: 'nope' });
      expect(unknown.error?.code).toBe(grpc.status.NOT_FOUND);
      expect(unknown.error?.details).toContain('no saga "nope"');
      const badJson = await unary('Start', { ...request, input_json: '{', idempotency_key: 'grpc-2' });
      expect(badJson.error?.code).toBe(grpc.status.INVALID_ARGUMENT);

      // Without the token, or with another one, nothing is started, read or watched.
      for (const meta of [metadata(), metadata('Bearer not-the-token'), metadata('not-even-bearer')]) {
        const refused = await unary('Start', { ...request, idempotency_key: 'grpc-3' }, meta);
        expect(refused.error?.code).toBe(grpc.status.UNAUTHENTICATED);
        expect(refused.error?.details).toContain('authorization: Bearer <token>');
        const read = await unary('Get', { id: started.response.execution.id }, meta);
        expect(read.error?.code).toBe(grpc.status.UNAUTHENTICATED);
        const watched = await new Promise<grpc.ServiceError>((resolve) => {
          const stream = client.Watch({ id: started.response.execution.id }, meta);
          stream.on('data', () => resolve(new Error('the watch answered') as grpc.ServiceError));
          stream.on('error', resolve);
        });
        expect(watched.code).toBe(grpc.status.UNAUTHENTICATED);
      }
      const listed = await unary<{ executions: { idempotency_key: string }[] }>('List', {});
      expect(listed.response.executions.map((e) => e.idempotency_key)).not.toContain('grpc-3');
    } finally {
      client.close();
    }
  });
});

describe('tracing', () => {
  it('exports a span per step, all of one execution in one trace, and a span per proxied call, over OTLP/HTTP', async () => {
    const spans: { name: string; traceId: string; parentSpanId?: string }[] = [];
    const receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        if (req.url === '/v1/traces' && String(req.headers['content-type']).includes('json')) {
          const payload = JSON.parse(body) as {
            resourceSpans: {
              scopeSpans: { spans: { name: string; traceId: string; parentSpanId?: string }[] }[];
            }[];
          };
          for (const resource of payload.resourceSpans)
            for (const scope of resource.scopeSpans) spans.push(...scope.spans);
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    try {
      const endpoint = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
      const orchestrator = await startOrchestrator(
        'orchestrator-traced',
        { kind: 'file', path: join(storeDir, 'traced') },
        { tracing: { endpoint, sampleRatio: 1 } },
      );
      const { execution } = await startExecution(
        orchestrator,
        'health-data',
        { userId: 't-1', type: 'bp', measurements: [] },
        'traced-1',
      );
      expect((await finished(orchestrator, execution.id)).state).toBe('completed');
      await waitFor(
        'four step spans exported',
        async () => spans.filter((s) => s.name.startsWith('saga health-data ')).length >= 4,
        20_000,
      );
      const steps = spans.filter((s) => s.name.startsWith('saga health-data '));
      expect(steps.map((s) => s.name)).toEqual(
        expect.arrayContaining([
          'saga health-data validate_user action',
          'saga health-data save_health_data action',
          'saga health-data update_blockchain action',
          'saga health-data trigger_ai_analysis action',
        ]),
      );
      expect(new Set(steps.map((s) => s.traceId)).size).toBe(1);
      await waitFor(
        'proxy spans exported',
        async () => spans.some((s) => s.name === 'POST blockchain-service'),
        20_000,
      );
      const proxied = spans.find((s) => s.name === 'POST blockchain-service');
      expect(proxied?.traceId).toBe(steps[0]?.traceId);
    } finally {
      receiver.closeAllConnections();
      await new Promise((resolve) => receiver.close(resolve));
    }
  });
});

describe('saga engine, Consul store', () => {
  it('kill -9 of one orchestrator with 200 executions in flight: its peer takes them over and finishes them', async () => {
    const store = { kind: 'consul' as const, prefix: 'aimesh/e2e-sagas', sessionTtl: '10s' };
    const first = await startOrchestrator('orchestrator-consul-a', store);
    const peer = await startOrchestrator('orchestrator-consul-b', store);
    for (const service of services.values()) service.behaviour.delayMs = 300;
    try {
      const started = await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          startExecution(
            first,
            'health-data',
            { userId: `consul-${i}`, type: 'bp', measurements: [] },
            `crash-consul-${i}`,
          ),
        ),
      );
      expect(started.every((s) => s.status === 201)).toBe(true);
      await new Promise((r) => setTimeout(r, 400));
      expect(await unfinished(first, 'crash-consul-')).toBeGreaterThanOrEqual(150);
      first.process.child.kill('SIGKILL');
      await first.process.exited;
      const states = await Promise.all(
        started.map(({ execution }) => finished(peer, execution.id).then((e) => e.state)),
      );
      // wait=30s may return before the peer (after the 10 s session TTL) has finished: poll.
      await waitFor(
        'every execution terminal',
        async () => {
          const all = (await (
            await fetch(`${peer.control}/v1/executions?saga=health-data`, { headers: peer.controlAuth })
          ).json()) as Execution[];
          return all
            .filter((e) => e.idempotencyKey.startsWith('crash-consul-'))
            .every((e) => e.state === 'completed');
        },
        90_000,
      );
      expect(states.length).toBe(200);
      expect(duplicatedEffects()).toEqual([]);
      const metrics = await (await fetch(`${peer.admin}/metrics`)).text();
      expect(metrics).toMatch(/aimesh_saga_recovered_total\{saga="health-data"\} [1-9]/);
      // Nothing is left unfinished, so nothing is stuck.
      expect(metrics).toContain('aimesh_saga_executions_stuck{saga="health-data"} 0');
    } finally {
      for (const service of services.values()) service.behaviour.delayMs = 0;
    }
  });
});
