import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { join } from 'node:path';
import { REPO_DIR } from '../env/components.js';
import { waitFor } from '../env/index.js';
import { sharedEnvironment } from './shared.js';
import { startSidecar, type SidecarProcess } from './sidecar-process.js';

/**
 * gRPC through the sidecar with real @grpc/grpc-js servers and client: unary and
 * server-streaming calls, metadata both ways, and status codes with their messages.
 * Consul health-checks the servers with grpc.health.v1.
 */
const FIXTURES = join(REPO_DIR, 'test', 'e2e', 'fixtures');
const definition = protoLoader.loadSync([join(FIXTURES, 'greeter.proto'), join(FIXTURES, 'health.proto')], {
  keepCase: true,
});
const loaded = grpc.loadPackageDefinition(definition) as unknown as {
  greeter: { Greeter: grpc.ServiceClientConstructor };
  grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
};
const consul = sharedEnvironment().consul.address;

interface GreeterClient extends grpc.Client {
  SayHello: (
    request: { name: string },
    metadata: grpc.Metadata,
    callback: (error: grpc.ServiceError | null, reply?: { message: string; instance: string }) => void,
  ) => grpc.ClientUnaryCall;
  Countdown: (request: { from: number }) => grpc.ClientReadableStream<{ value: number }>;
}

const servers: { server: grpc.Server; sidecar: SidecarProcess }[] = [];
let caller: SidecarProcess;
let client: GreeterClient;

async function startGreeter(instance: string): Promise<void> {
  const server = new grpc.Server();
  server.addService(loaded.greeter.Greeter.service, {
    SayHello: (
      call: grpc.ServerUnaryCall<{ name: string }, unknown>,
      callback: grpc.sendUnaryData<{ message: string; instance: string }>,
    ) => {
      if (call.request.name === 'nobody') {
        callback({ code: grpc.status.NOT_FOUND, details: 'no such person: nobody' });
        return;
      }
      const trailer = new grpc.Metadata();
      trailer.set('x-served-by', instance);
      const tenant = call.metadata.get('x-tenant')[0] ?? 'none';
      callback(null, { message: `hello ${call.request.name} (tenant ${String(tenant)})`, instance }, trailer);
    },
    Countdown: (call: grpc.ServerWritableStream<{ from: number }, { value: number }>) => {
      let value = call.request.from;
      const tick = setInterval(() => {
        call.write({ value });
        if (--value < 0) {
          clearInterval(tick);
          call.end();
        }
      }, 20);
    },
  });
  server.addService(loaded.grpc.health.v1.Health.service, {
    Check: (_call: unknown, callback: grpc.sendUnaryData<{ status: string }>) =>
      callback(null, { status: 'SERVING' }),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  const sidecar = await startSidecar(
    instance,
    {
      service: { name: 'greeter', port, protocol: 'grpc', healthCheck: { interval: '1s', timeout: '1s' } },
      discovery: { mode: 'consul', consul: { tags: ['grpc'] } },
    },
    consul,
  );
  servers.push({ server, sidecar });
}

beforeAll(async () => {
  await startGreeter('greeter-a');
  await startGreeter('greeter-b');
  caller = await startSidecar(
    'grpc-caller',
    {
      service: { name: 'grpc-caller', port: 1 },
      discovery: { mode: 'consul', consul: { register: false } },
      upstreams: [{ name: 'greeter', protocol: 'grpc', loadBalancer: { strategy: 'round-robin' } }],
    },
    consul,
  );
  await waitFor(
    'two passing greeters (Consul gRPC health checks)',
    async () => {
      const dump = (await (await fetch(`${caller.admin}/admin/endpoints`)).json()) as {
        endpoints: unknown[];
      }[];
      return dump[0]?.endpoints.length === 2;
    },
    30_000,
  );
  // The app talks to its sidecar in plain HTTP/2 and names the service in :authority.
  client = new loaded.greeter.Greeter(
    caller.outbound.replace('http://', ''),
    grpc.credentials.createInsecure(),
    {
      'grpc.default_authority': 'greeter',
    },
  ) as unknown as GreeterClient;
});

afterAll(async () => {
  client?.close();
  await caller?.stop();
  for (const { server, sidecar } of servers) {
    await sidecar.stop();
    server.forceShutdown();
  }
});

function sayHello(name: string, metadata = new grpc.Metadata()) {
  return new Promise<{
    reply?: { message: string; instance: string };
    error?: grpc.ServiceError;
    trailers?: grpc.Metadata;
  }>((resolve) => {
    let trailers: grpc.Metadata | undefined;
    const call = client.SayHello({ name }, metadata, (error, reply) => {
      setImmediate(() => resolve({ ...(reply ? { reply } : {}), ...(error ? { error } : {}), trailers }));
    });
    call.on('status', (status: grpc.StatusObject) => (trailers = status.metadata));
  });
}

describe('gRPC through the sidecar', () => {
  it('unary calls reach both instances, with metadata both ways', async () => {
    const metadata = new grpc.Metadata();
    metadata.set('x-tenant', 'suoke');
    const seen = new Set<string>();
    for (let i = 0; i < 10; i++) {
      const { reply, error, trailers } = await sayHello('xiaoai', metadata);
      expect(error).toBeUndefined();
      expect(reply?.message).toBe('hello xiaoai (tenant suoke)');
      expect(trailers?.get('x-served-by')[0]).toBe(reply?.instance);
      seen.add(reply?.instance as string);
    }
    expect([...seen].sort()).toEqual(['greeter-a', 'greeter-b']);
  });

  it('server streaming delivers every message in order', async () => {
    const values: number[] = [];
    await new Promise<void>((resolve, reject) => {
      const stream = client.Countdown({ from: 5 });
      stream.on('data', (tick: { value: number }) => values.push(tick.value));
      stream.on('end', () => resolve());
      stream.on('error', reject);
    });
    expect(values).toEqual([5, 4, 3, 2, 1, 0]);
  });

  it('status codes and messages from the server pass through unchanged', async () => {
    const { error } = await sayHello('nobody');
    expect(error?.code).toBe(grpc.status.NOT_FOUND);
    expect(error?.details).toBe('no such person: nobody');
  });

  it('an unknown service gets a clear error from the sidecar', async () => {
    const other = new loaded.greeter.Greeter(
      caller.outbound.replace('http://', ''),
      grpc.credentials.createInsecure(),
      {
        'grpc.default_authority': 'billing',
      },
    ) as unknown as GreeterClient;
    try {
      const error = await new Promise<grpc.ServiceError | null>((resolve) =>
        other.SayHello({ name: 'x' }, new grpc.Metadata(), (e) => resolve(e)),
      );
      // The sidecar's error model (lib/errors): an unknown upstream is NOT_FOUND.
      expect(error?.code).toBe(grpc.status.NOT_FOUND);
      expect(error?.details).toContain('"billing" is not an upstream of this service');
    } finally {
      other.close();
    }
  });
});
