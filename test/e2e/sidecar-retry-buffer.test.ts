import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConsulClient, ConsulRegistration } from '../../sidecar/discovery/index.js';
import { registerTestService } from './step-services.js';
import { waitFor } from '../env/index.js';
import { sharedEnvironment } from './shared.js';
import { startSidecar, type SidecarProcess } from './sidecar-process.js';

/**
 * `retries.bufferBytes` in a real sidecar process: a real HTTP upstream, found through the
 * shared Consul agent, fails the first try of every request with 503. A body within the
 * configured buffer is resent whole; a larger one reaches the upstream once and the app gets
 * the upstream's own answer, never a failure of the sidecar's for a request the upstream took.
 */
const consulAddress = sharedEnvironment().consul.address;
const consul = new ConsulClient(consulAddress);
const service = `uploads-${randomUUID().slice(0, 8)}`;
/** Bodies received, by the request's x-body-id. */
const received = new Map<string, string[]>();
const server = createServer((req, res) => {
  if (req.url === '/healthz') return void res.end('ok');
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    const id = String(req.headers['x-body-id']);
    const bodies = received.get(id) ?? [];
    bodies.push(Buffer.concat(chunks).toString());
    received.set(id, bodies);
    res.writeHead(bodies.length === 1 ? 503 : 200, { 'content-type': 'text/plain' });
    res.end(`try ${bodies.length}`);
  });
});
let registration: ConsulRegistration | undefined;
let caller: SidecarProcess;

beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  registration = await registerTestService(consul, service, port);
  caller = await startSidecar(
    'retry-buffer',
    {
      service: { name: 'uploader', port: 1 },
      discovery: { mode: 'consul', consul: { register: false } },
      upstreams: [
        {
          name: service,
          timeout: '10s',
          retries: { attempts: 2, retryOn: ['5xx'], retryNonIdempotent: true, bufferBytes: 1024 },
        },
      ],
    },
    consulAddress,
  );
  await waitFor(
    'the caller sees the upstream',
    async () => {
      const dump = (await (await fetch(`${caller.admin}/admin/endpoints`)).json()) as {
        endpoints: unknown[];
      }[];
      return dump[0]?.endpoints.length === 1;
    },
    30_000,
  );
});

afterAll(async () => {
  await caller?.stop();
  await registration?.deregister().catch(() => undefined);
  await consul.close();
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

async function upload(id: string, body: string | ReadableStream<Uint8Array>) {
  const response = await fetch(`${caller.outbound}/v1/invoke/${service}/upload`, {
    method: 'POST',
    headers: { 'content-type': 'text/plain', 'x-body-id': id },
    body,
    ...(typeof body === 'string' ? {} : { duplex: 'half' }),
  } as RequestInit);
  return {
    status: response.status,
    text: await response.text(),
    aimeshError: response.headers.get('x-aimesh-error'),
  };
}

/** A body sent chunked, without a length: the sidecar finds its size only by reading it. */
function chunked(parts: string[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      for (const part of parts) controller.enqueue(new TextEncoder().encode(part));
      controller.close();
    },
  });
}

describe('retries.bufferBytes', () => {
  it('resends a body within the buffer whole on a retry', async () => {
    const body = 'a'.repeat(1000);
    expect(await upload('within', body)).toEqual({ status: 200, text: 'try 2', aimeshError: null });
    expect(received.get('within')).toEqual([body, body]);
    expect(await upload('within-chunked', chunked(['b'.repeat(500), 'c'.repeat(500)]))).toMatchObject({
      status: 200,
    });
    expect(received.get('within-chunked')).toEqual([
      'b'.repeat(500) + 'c'.repeat(500),
      'b'.repeat(500) + 'c'.repeat(500),
    ]);
  });

  it('sends a body over the buffer once, whole, and passes the upstream’s own answer on', async () => {
    const body = 'd'.repeat(2000);
    expect(await upload('over', body)).toEqual({ status: 503, text: 'try 1', aimeshError: null });
    expect(received.get('over')).toEqual([body]);
    const parts = ['e'.repeat(800), 'f'.repeat(800), 'g'.repeat(800)];
    expect(await upload('over-chunked', chunked(parts))).toEqual({
      status: 503,
      text: 'try 1',
      aimeshError: null,
    });
    expect(received.get('over-chunked')).toEqual([parts.join('')]);
  });
});
