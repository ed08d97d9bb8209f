import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { SidecarConfigInput } from '../../api/index.js';
import { waitFor } from '../env/index.js';
import { sharedEnvironment } from './shared.js';
import { startSidecar, type SidecarProcess } from './sidecar-process.js';

/**
 * Tracing follows the sidecar's config file: a reload that moves the tracing endpoint sends
 * the spans of later calls to the new OTLP/HTTP receiver and none to the old one. Both
 * receivers are real HTTP servers that take OTLP JSON, as a collector does.
 */
interface Receiver {
  server: Server;
  endpoint: string;
  /** Trace ids of every span received. */
  traceIds: Set<string>;
}

const receivers: Receiver[] = [];
let sidecar: SidecarProcess | undefined;

async function startReceiver(): Promise<Receiver> {
  const traceIds = new Set<string>();
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      if (req.url === '/v1/traces' && String(req.headers['content-type']).includes('json')) {
        const payload = JSON.parse(body) as {
          resourceSpans: { scopeSpans: { spans: { traceId: string }[] }[] }[];
        };
        for (const resource of payload.resourceSpans)
          for (const scope of resource.scopeSpans) for (const span of scope.spans) traceIds.add(span.traceId);
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const receiver = {
    server,
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    traceIds,
  };
  receivers.push(receiver);
  return receiver;
}

function config(endpoint: string): Omit<SidecarConfigInput, 'listen'> {
  return {
    service: { name: 'traced', port: 1 },
    discovery: { mode: 'consul', consul: { register: false } },
    // Nothing registers it: each call fails fast, and still makes a span.
    upstreams: [{ name: 'trace-nobody', timeout: '2s' }],
    observability: { tracing: { endpoint, sampleRatio: 1 } },
  };
}

/** A proxied call in a trace of our own (sampled), so its span is found by trace id. */
async function tracedCall(): Promise<string> {
  const traceId = randomBytes(16).toString('hex');
  const response = await fetch(`${(sidecar as SidecarProcess).outbound}/v1/invoke/trace-nobody/x`, {
    headers: { traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` },
  });
  await response.text();
  return traceId;
}

beforeAll(async () => {
  const first = await startReceiver();
  await startReceiver();
  sidecar = await startSidecar('traced', config(first.endpoint), sharedEnvironment().consul.address);
});

afterAll(async () => {
  await sidecar?.stop();
  for (const { server } of receivers) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

describe('tracing on config reload', () => {
  it('sends the spans of calls after a reload to the new endpoint, and none to the old', async () => {
    const [before, after] = receivers as [Receiver, Receiver];
    const first = await tracedCall();
    await waitFor('the first span at the first receiver', async () => before.traceIds.has(first), 20_000);

    await (sidecar as SidecarProcess).reload(config(after.endpoint));
    await waitFor('the sidecar serves the new tracing endpoint', async () => {
      const served = (await (await fetch(`${(sidecar as SidecarProcess).admin}/admin/config`)).json()) as {
        observability?: { tracing?: { endpoint?: string } };
      };
      return served.observability?.tracing?.endpoint === after.endpoint;
    });
    // Calls made while the exporters change make no span, so call until one arrives.
    const sentAfter: string[] = [];
    await waitFor(
      'a span of a call after the reload at the new receiver',
      async () => {
        sentAfter.push(await tracedCall());
        await new Promise((resolve) => setTimeout(resolve, 1500));
        return sentAfter.some((id) => after.traceIds.has(id));
      },
      30_000,
    );
    expect(sentAfter.filter((id) => before.traceIds.has(id))).toEqual([]);
    expect(after.traceIds.has(first)).toBe(false);
  });
});
