import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SidecarConfigInput } from '../../api/index.js';
import { sharedEnvironment } from './shared.js';
import { startSidecar, type SidecarProcess } from './sidecar-process.js';

/**
 * The AI route through a real sidecar to real HTTP servers that speak the OpenAI API
 * shape: priority and weight, failover on 429/5xx (before the first streamed byte too),
 * cooldown, quota, model lists, keys from mounted files, and the response cache.
 */
interface Provider {
  name: string;
  server: Server;
  url: string;
  calls: { path: string; authorization?: string; body: Record<string, unknown> }[];
  failNext: number;
  failStatus: number;
  /** When set, a stream sends its first chunk, then waits for this before the rest. */
  streamGate?: Promise<void>;
}

const providers = new Map<string, Provider>();
const dir = mkdtempSync(join(tmpdir(), 'aimesh-ai-'));
let sidecar: SidecarProcess;

async function startProvider(name: string): Promise<Provider> {
  const provider: Provider = {
    name,
    server: createServer(),
    url: '',
    calls: [],
    failNext: 0,
    failStatus: 503,
  };
  provider.server.on('request', (req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c.toString()));
    req.on('end', () => {
      const body = text ? (JSON.parse(text) as Record<string, unknown>) : {};
      provider.calls.push({ path: req.url ?? '', authorization: req.headers.authorization, body });
      if (provider.failNext > 0) {
        provider.failNext--;
        res.writeHead(provider.failStatus, { 'content-type': 'application/json' });
        return res.end(JSON.stringify({ error: { message: `${name} is overloaded` } }));
      }
      if (body.stream === true) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const chunk = (n: number) =>
          `data: ${JSON.stringify({ choices: [{ delta: { content: `${name}-${n}` } }] })}\n\n`;
        res.write(chunk(1));
        void (provider.streamGate ?? Promise.resolve()).then(() => {
          res.write(chunk(2));
          res.end(`${chunk(3)}data: [DONE]\n\n`);
        });
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          choices: [{ message: { role: 'assistant', content: `answer from ${name}` } }],
          usage: { total_tokens: 40 },
        }),
      );
    });
  });
  await new Promise<void>((resolve) => provider.server.listen(0, '127.0.0.1', resolve));
  provider.url = `http://127.0.0.1:${(provider.server.address() as AddressInfo).port}/v1`;
  providers.set(name, provider);
  return provider;
}

function config(): Omit<SidecarConfigInput, 'listen'> {
  writeFileSync(join(dir, 'primary-key'), 'sk-primary-123\n');
  const p = (name: string) => (providers.get(name) as Provider).url;
  return {
    service: { name: 'llm-gateway', port: 1 },
    discovery: { mode: 'consul', consul: { register: false } },
    providers: [
      {
        name: 'primary',
        baseUrl: p('primary'),
        priority: 100,
        weight: 3,
        apiKeyFile: join(dir, 'primary-key'),
        models: ['gpt-4o'],
      },
      { name: 'secondary', baseUrl: p('secondary'), priority: 100, weight: 1, models: ['gpt-4o'] },
      {
        name: 'fallback',
        baseUrl: p('fallback'),
        priority: 10,
        models: [],
        quota: { requestsPerMinute: 1000 },
      },
      {
        name: 'deepseek',
        baseUrl: p('deepseek'),
        priority: 50,
        models: ['deepseek-chat'],
        quota: { requestsPerMinute: 2 },
      },
    ],
    aiRouting: { cooldown: '2s', cache: { ttl: '300s', maxEntries: 1000 } },
  };
}

async function chat(body: Record<string, unknown>) {
  const response = await fetch(`${sidecar.outbound}/v1/ai/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return {
    status: response.status,
    provider: response.headers.get('x-aimesh-provider'),
    cache: response.headers.get('x-aimesh-cache'),
    text: await response.text(),
  };
}

beforeAll(async () => {
  for (const name of ['primary', 'secondary', 'fallback', 'deepseek']) await startProvider(name);
  sidecar = await startSidecar('llm-gateway', config(), sharedEnvironment().consul.address);
});

afterAll(async () => {
  await sidecar?.stop();
  for (const provider of providers.values()) {
    provider.server.closeAllConnections();
    await new Promise((resolve) => provider.server.close(resolve));
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('AI route', () => {
  it('uses the top priority group, weighted within it, with the key from the mounted file', async () => {
    const counts: Record<string, number> = {};
    for (let i = 0; i < 400; i++) {
      const { status, provider } = await chat({
        model: 'gpt-4o',
        messages: [{ role: 'user', content: `q${i}` }],
      });
      expect(status).toBe(200);
      counts[provider as string] = (counts[provider as string] ?? 0) + 1;
    }
    // 3:1 within priority 100; σ ≈ 8.7 for 400 draws at p = 0.75.
    expect(counts.primary).toBeGreaterThan(260);
    expect(counts.primary).toBeLessThan(340);
    expect((counts.primary ?? 0) + (counts.secondary ?? 0)).toBe(400);
    const primary = providers.get('primary') as Provider;
    expect(primary.calls[0]?.authorization).toBe('Bearer sk-primary-123');
    expect(providers.get('secondary')?.calls[0]?.authorization).toBeUndefined();
  });

  it('fails over on 429 and 5xx, and skips a failed channel while it cools down', async () => {
    const primary = providers.get('primary') as Provider;
    const secondary = providers.get('secondary') as Provider;
    primary.failNext = 1000;
    primary.failStatus = 429;
    secondary.failNext = 1000;
    secondary.failStatus = 503;
    try {
      const first = await chat({ model: 'gpt-4o', messages: [{ role: 'user', content: 'failover' }] });
      expect(first).toMatchObject({ status: 200, provider: 'fallback' });
      const primaryCalls = primary.calls.length;
      for (let i = 0; i < 5; i++)
        expect(
          (await chat({ model: 'gpt-4o', messages: [{ role: 'user', content: `cool ${i}` }] })).provider,
        ).toBe('fallback');
      expect(primary.calls.length).toBe(primaryCalls);
    } finally {
      primary.failNext = 0;
      secondary.failNext = 0;
    }
    await new Promise((r) => setTimeout(r, 2100));
    expect(
      (await chat({ model: 'gpt-4o', messages: [{ role: 'user', content: 'after cooldown' }] })).provider,
    ).not.toBe('fallback');
  });

  it('fails over a streamed call before its first byte, then streams the answer as it comes', async () => {
    const primary = providers.get('primary') as Provider;
    const secondary = providers.get('secondary') as Provider;
    primary.failNext = 1;
    secondary.failNext = 1;
    primary.failStatus = 500;
    secondary.failStatus = 500;
    // The fallback holds the rest of its stream until the app has read the first chunk: a
    // sidecar that buffered the answer would never deliver that chunk, and the test times out.
    const gate = Promise.withResolvers<void>();
    const fallback = providers.get('fallback') as Provider;
    fallback.streamGate = gate.promise;
    const response = await fetch(`${sidecar.outbound}/v1/ai/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'gpt-4o',
        stream: true,
        messages: [{ role: 'user', content: 'stream' }],
      }),
    });
    expect(response.headers.get('x-aimesh-provider')).toBe('fallback');
    expect(response.headers.get('content-type')).toBe('text/event-stream');
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first).toContain('fallback-1');
    expect(first).not.toContain('fallback-2');
    gate.resolve();
    delete fallback.streamGate;
    let rest = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      rest += new TextDecoder().decode(value);
    }
    expect(rest).toContain('fallback-3');
    expect(rest).toContain('data: [DONE]');
  });

  it('routes by model and honours each channel’s quota', async () => {
    const results = [];
    for (let i = 0; i < 3; i++)
      results.push(await chat({ model: 'deepseek-chat', messages: [{ role: 'user', content: `ds ${i}` }] }));
    expect(results.slice(0, 2).map((r) => r.provider)).toEqual(['deepseek', 'deepseek']);
    // Two requests a minute: the third goes to the channel that serves any model.
    expect(results[2]?.provider).toBe('fallback');
  });

  it('answers an identical non-streamed request from the cache', async () => {
    const body = { model: 'gpt-4o', messages: [{ role: 'user', content: 'cache me' }] };
    const first = await chat(body);
    const calls = [...providers.values()].reduce((n, p) => n + p.calls.length, 0);
    const second = await chat(body);
    expect(second).toMatchObject({ status: 200, cache: 'hit', provider: first.provider, text: first.text });
    expect([...providers.values()].reduce((n, p) => n + p.calls.length, 0)).toBe(calls);
  });

  it('says clearly when no channel can answer', async () => {
    for (const provider of providers.values()) {
      provider.failNext = 1000;
      provider.failStatus = 503;
    }
    try {
      const { status, text } = await chat({
        model: 'gpt-4o',
        messages: [{ role: 'user', content: 'all down' }],
      });
      expect(status).toBe(503);
      // OpenAI's error shape, which OpenAI client libraries read; aimesh's code inside it.
      const { error } = JSON.parse(text) as {
        error: { message: string; type: string; code: string; failures: string[] };
      };
      expect(error.message).toMatch(/^no provider channel could answer: /);
      expect(error.type).toBe('server_error');
      expect(error.code).toBe('upstream.unavailable');
      expect(error.failures).toHaveLength(4);
    } finally {
      for (const provider of providers.values()) provider.failNext = 0;
    }
  });
});
