import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { SidecarConfigInput } from '../../api/index.js';
import { waitFor } from '../env/index.js';
import { sharedEnvironment } from './shared.js';
import { startSidecar, type SidecarProcess } from './sidecar-process.js';

/**
 * Streamed (SSE) answers count against a channel's tokens-per-minute quota: through a real
 * sidecar to a real local HTTP server speaking OpenAI's streaming shape. Each scenario has
 * its own model, served by its own metered channel; `spare` (lowest priority, any model, no
 * quota) answers once a metered channel is over its quota.
 */
interface Call {
  model: string;
  streamOptions?: unknown;
  closed: boolean;
}

const calls: Call[] = [];
const server = createServer((req, res) => void answer(req, res));
let sidecar: SidecarProcess;

/**
 * Usage reported only when asked for, as OpenAI does; `m-quiet` and `m-endless` never report
 * it, and `spare` (under /spare/) answers every model with a short stream.
 */
async function answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
  let text = '';
  for await (const chunk of req) text += (chunk as Buffer).toString();
  const spare = req.url?.startsWith('/spare/') === true;
  const body = JSON.parse(text) as { model: string; stream_options?: { include_usage?: boolean } };
  const call: Call = {
    model: spare ? `spare:${body.model}` : body.model,
    streamOptions: body.stream_options,
    closed: false,
  };
  calls.push(call);
  res.once('close', () => (call.closed = true));
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  const send = (data: unknown) => res.write(`data: ${JSON.stringify(data)}\n\n`);
  const delta = (content: string) => ({ choices: [{ index: 0, delta: { content } }] });
  if (body.model === 'm-endless' && !spare) {
    // Until the app leaves: 100 characters (25 estimated tokens) per chunk.
    const tick = setInterval(() => send(delta('x'.repeat(100))), 20);
    res.once('close', () => clearInterval(tick));
    return;
  }
  // 120 characters in three chunks, the third cut across two writes.
  send(delta('a'.repeat(40)));
  send(delta('b'.repeat(40)));
  const last = `data: ${JSON.stringify(delta('c'.repeat(40)))}\n\n`;
  res.write(last.slice(0, 10));
  res.write(last.slice(10));
  if (body.model !== 'm-quiet' && !spare && body.stream_options?.include_usage)
    send({ choices: [], usage: { prompt_tokens: 10, completion_tokens: 50, total_tokens: 60 } });
  res.end('data: [DONE]\n\n');
}

function config(url: string): Omit<SidecarConfigInput, 'listen'> {
  const metered = (name: string, model: string, tokensPerMinute: number) => ({
    name,
    baseUrl: url,
    priority: 100,
    models: [model],
    quota: { tokensPerMinute },
  });
  return {
    service: { name: 'stream-gateway', port: 1 },
    discovery: { mode: 'consul', consul: { register: false } },
    providers: [
      metered('reported', 'm-reported', 50),
      metered('asked', 'm-asked', 50),
      // 120 streamed characters ≈ 30 tokens, plus the prompt's; a provider that refuses stream_options.
      { ...metered('quiet', 'm-quiet', 30), streamUsage: false },
      metered('endless', 'm-endless', 20),
      { name: 'spare', baseUrl: `${url}/spare`, priority: 1, models: [] },
    ],
  };
}

async function stream(model: string, extra: Record<string, unknown> = {}) {
  const response = await fetch(`${sidecar.outbound}/v1/ai/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, stream: true, messages: [{ role: 'user', content: 'hello' }], ...extra }),
  });
  return { provider: response.headers.get('x-aimesh-provider'), text: await response.text() };
}

/**
 * The channels serving `model` for two calls in a row. Quotas are per minute: a pair that
 * straddles a minute's turn is tried again, so the second call always sees the first's charge.
 */
async function twoInOneMinute(first: () => Promise<string | null>, second: () => Promise<string | null>) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const minute = Math.floor(Date.now() / 60_000);
    const providers = [await first(), await second()];
    if (Math.floor(Date.now() / 60_000) === minute) return providers;
  }
  throw new Error('three pairs in a row straddled a minute');
}

beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  sidecar = await startSidecar('stream-gateway', config(url), sharedEnvironment().consul.address);
});

afterAll(async () => {
  await sidecar?.stop();
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

describe('streamed AI answers and the tokens quota', () => {
  it('asks the provider for usage, charges it when the stream ends, and keeps the usage chunk from an app that did not ask', async () => {
    let received = '';
    const providers = await twoInOneMinute(
      async () => {
        const first = await stream('m-reported');
        received = first.text;
        return first.provider;
      },
      async () => (await stream('m-reported')).provider,
    );
    // 60 reported tokens is over the 50 a minute: the second stream goes to the spare channel.
    expect(providers).toEqual(['reported', 'spare']);
    expect(calls.find((c) => c.model === 'm-reported')?.streamOptions).toEqual({ include_usage: true });
    expect(received).not.toContain('usage');
    expect(received).toContain('c'.repeat(40));
    expect(received.trim().endsWith('data: [DONE]')).toBe(true);
  });

  it('passes the usage chunk on to an app that asked for it, and charges it', async () => {
    let received = '';
    const providers = await twoInOneMinute(
      async () => {
        const first = await stream('m-asked', { stream_options: { include_usage: true } });
        received = first.text;
        return first.provider;
      },
      async () => (await stream('m-asked', { stream_options: { include_usage: true } })).provider,
    );
    expect(providers).toEqual(['asked', 'spare']);
    expect(received).toContain('"total_tokens":60');
  });

  it('charges an estimate from the streamed text when the provider reports no usage, or is not asked', async () => {
    const providers = await twoInOneMinute(
      async () => (await stream('m-quiet')).provider,
      async () => (await stream('m-quiet')).provider,
    );
    expect(providers).toEqual(['quiet', 'spare']);
    // streamUsage: false, so the channel never sees a field it may refuse.
    const quiet = calls.filter((c) => c.model === 'm-quiet');
    expect(quiet.length).toBeGreaterThan(0);
    expect(quiet.filter((c) => c.streamOptions !== undefined)).toEqual([]);
  });

  it('charges what was streamed when the app leaves mid-stream, and ends the provider’s stream', async () => {
    const providers = await twoInOneMinute(
      async () => {
        const abort = new AbortController();
        const response = await fetch(`${sidecar.outbound}/v1/ai/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'm-endless', stream: true, messages: [] }),
          signal: abort.signal,
        });
        const reader = (response.body as ReadableStream<Uint8Array>).getReader();
        let read = '';
        while (!read.includes('x'.repeat(100))) read += new TextDecoder().decode((await reader.read()).value);
        abort.abort();
        await reader.read().catch(() => undefined);
        const call = calls.findLast((c) => c.model === 'm-endless') as Call;
        await waitFor('the provider’s stream ended', async () => call.closed, 10_000);
        return response.headers.get('x-aimesh-provider');
      },
      async () => (await stream('m-endless')).provider,
    );
    expect(providers).toEqual(['endless', 'spare']);
  });
});
