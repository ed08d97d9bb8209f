/**
 * The AI route: OpenAI-compatible calls the app sends to the sidecar at /v1/ai/<path>
 * (e.g. OPENAI_BASE_URL=http://127.0.0.1:4700/v1/ai) go to a provider channel at
 * <baseUrl>/<path>, with the channel's key from its mounted Secret file. A channel that
 * answers 429 or 5xx, or cannot be reached, before the first byte of its answer is left
 * for the next one, so streamed (SSE) answers fail over too; once bytes have reached the
 * app, the answer is that channel's. Identical non-streamed requests can be answered from
 * a cache.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Counter, type Registry } from 'prom-client';
import { Agent, request } from 'undici';
import { durationMs, type SidecarConfig } from '../../api/index.js';
import { ChannelSelector } from './channels.js';

export const AI_PREFIX = '/v1/ai/';
const MAX_BODY_BYTES = 10 * 1024 * 1024;

type Provider = SidecarConfig['providers'][number];

export class AiRoute {
  private readonly selector: ChannelSelector;
  private readonly cache = new Map<
    string,
    { status: number; contentType: string; body: Buffer; provider: string; expires: number }
  >();
  private readonly keys = new Map<string, { mtimeMs: number; key: string }>();
  private readonly dispatcher = new Agent({ keepAliveTimeout: 30_000, connections: 128 });
  private readonly metrics;

  constructor(
    private readonly providers: readonly Provider[],
    private readonly routing: SidecarConfig['aiRouting'],
    registry: Registry,
  ) {
    this.selector = new ChannelSelector(
      providers.map((p) => ({
        name: p.name,
        priority: p.priority,
        weight: p.weight,
        enabled: p.enabled,
        models: p.models,
        ...(p.quota?.requestsPerMinute ? { requestsPerMinute: p.quota.requestsPerMinute } : {}),
        ...(p.quota?.tokensPerMinute ? { tokensPerMinute: p.quota.tokensPerMinute } : {}),
      })),
      durationMs(routing?.cooldown ?? '30s'),
      routing?.circuitBreaker
        ? {
            consecutiveFailures: routing.circuitBreaker.consecutiveFailures,
            openForMs: durationMs(routing.circuitBreaker.openFor),
            halfOpenRequests: routing.circuitBreaker.halfOpenRequests,
          }
        : undefined,
    );
    const existing = (name: string) => registry.getSingleMetric(name) as Counter<string> | undefined;
    const counter = (name: string, help: string, labelNames: string[]) =>
      existing(name) ?? new Counter({ name, help, labelNames, registers: [registry] });
    this.metrics = {
      requests: counter(
        'aimesh_ai_requests_total',
        'AI calls by provider channel and status (0: no answer).',
        ['provider', 'code'],
      ),
      failovers: counter('aimesh_ai_failovers_total', 'AI calls moved on from a channel, by channel.', [
        'provider',
      ]),
      cacheHits: counter('aimesh_ai_cache_hits_total', 'AI calls answered from the response cache.', []),
      tokens: counter('aimesh_ai_tokens_total', 'Tokens reported by providers, by channel.', ['provider']),
    };
  }

  async handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const body = await readBody(req);
    if (body === undefined) return sendError(res, 413, 'request body larger than 10 MiB');
    const parsed = parseJson(body);
    const model = typeof parsed?.model === 'string' ? parsed.model : undefined;
    const streamed = parsed?.stream === true;
    const cacheKey =
      !streamed && this.routing?.cache && req.method === 'POST'
        ? hash(`${path}\n${body.toString('utf8')}`)
        : undefined;
    if (cacheKey) {
      const hit = this.cache.get(cacheKey);
      if (hit && hit.expires > Date.now()) {
        this.metrics.cacheHits.inc();
        res.writeHead(hit.status, {
          'content-type': hit.contentType,
          'x-aimesh-provider': hit.provider,
          'x-aimesh-cache': 'hit',
        });
        return void res.end(hit.body);
      }
    }
    const { order, skipped } = this.selector.plan(model, Date.now());
    const failures: string[] = Object.entries(skipped).map(([name, reason]) => `${name}: ${reason}`);
    for (const channel of order) {
      const provider = this.providers.find((p) => p.name === channel.name) as Provider;
      if (!this.selector.reserve(provider.name, Date.now())) {
        failures.push(`${provider.name}: quota`);
        continue;
      }
      let response;
      try {
        response = await request(`${provider.baseUrl.replace(/\/$/, '')}/${path}`, {
          method: (req.method ?? 'POST') as 'POST',
          dispatcher: this.dispatcher,
          headers: {
            'content-type': String(req.headers['content-type'] ?? 'application/json'),
            accept: String(req.headers.accept ?? '*/*'),
            ...this.authorization(provider),
          },
          body: req.method === 'GET' || req.method === 'HEAD' ? undefined : body,
          headersTimeout: durationMs(provider.timeout),
          bodyTimeout: durationMs(provider.timeout),
        });
      } catch (error) {
        this.fail(provider.name, 0, failures, `${provider.name}: ${(error as Error).message}`);
        continue;
      }
      if (response.statusCode === 429 || response.statusCode >= 500) {
        await response.body.dump();
        this.fail(provider.name, response.statusCode, failures, `${provider.name}: ${response.statusCode}`);
        continue;
      }
      this.metrics.requests.inc({ provider: provider.name, code: String(response.statusCode) });
      const contentType = String(response.headers['content-type'] ?? 'application/json');
      res.writeHead(response.statusCode, { 'content-type': contentType, 'x-aimesh-provider': provider.name });
      if (streamed || contentType.startsWith('text/event-stream')) {
        res.flushHeaders();
        // From the first byte on the answer is this channel's: stream it as it comes.
        response.body.pipe(res);
        await new Promise<void>((resolve) => {
          res.once('close', resolve);
          response.body.once('error', () => {
            res.destroy();
            resolve();
          });
        });
        this.selector.succeeded(provider.name, 0, Date.now());
        return;
      }
      const answer = Buffer.from(await response.body.arrayBuffer());
      const tokens =
        Number((parseJson(answer)?.usage as { total_tokens?: unknown } | undefined)?.total_tokens ?? 0) || 0;
      this.selector.succeeded(provider.name, tokens, Date.now());
      if (tokens > 0) this.metrics.tokens.inc({ provider: provider.name }, tokens);
      if (cacheKey && response.statusCode === 200)
        this.remember(cacheKey, contentType, answer, provider.name);
      res.end(answer);
      return;
    }
    sendError(
      res,
      order.length === 0 && failures.length === 0 ? 404 : 503,
      failures.length > 0
        ? `no provider channel could answer: ${failures.join('; ')}`
        : 'no provider channels are configured: add spec.providers to the AiService',
    );
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  private fail(name: string, code: number, failures: string[], message: string): void {
    this.selector.failed(name, Date.now());
    this.metrics.requests.inc({ provider: name, code: String(code) });
    this.metrics.failovers.inc({ provider: name });
    failures.push(message);
  }

  /** The key from the channel's mounted Secret file, read again when the file changes. */
  private authorization(provider: Provider): Record<string, string> {
    if (!provider.apiKeyFile) return {};
    try {
      const mtimeMs = statSync(provider.apiKeyFile).mtimeMs;
      let cached = this.keys.get(provider.name);
      if (!cached || cached.mtimeMs !== mtimeMs) {
        cached = { mtimeMs, key: readFileSync(provider.apiKeyFile, 'utf8').trim() };
        this.keys.set(provider.name, cached);
      }
      return { authorization: `Bearer ${cached.key}` };
    } catch {
      return {};
    }
  }

  private remember(key: string, contentType: string, body: Buffer, provider: string): void {
    const settings = this.routing?.cache;
    if (!settings) return;
    this.cache.delete(key);
    this.cache.set(key, {
      status: 200,
      contentType,
      body,
      provider,
      expires: Date.now() + durationMs(settings.ttl),
    });
    while (this.cache.size > settings.maxEntries) this.cache.delete(this.cache.keys().next().value as string);
  }
}

async function readBody(req: IncomingMessage): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) return undefined;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function parseJson(body: Buffer): Record<string, unknown> | undefined {
  try {
    const value = JSON.parse(body.toString('utf8')) as unknown;
    return value && typeof value === 'object' && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

function hash(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function sendError(res: ServerResponse, status: number, message: string): void {
  res.writeHead(status, { 'content-type': 'application/json', 'x-aimesh-error': 'true' });
  res.end(`${JSON.stringify({ error: { message, type: 'aimesh_error' } })}\n`);
}
