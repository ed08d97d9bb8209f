/**
 * The AI route: OpenAI-compatible calls the app sends to the sidecar at /v1/ai/<path>
 * (e.g. OPENAI_BASE_URL=http://127.0.0.1:4700/v1/ai) go to a provider channel at
 * <baseUrl>/<path>, with the channel's key from its mounted Secret file.
 *
 * A channel is an upstream of the one stack whose endpoint is the provider's base URL, so
 * its calls get the same deadline, breaker, cancellation, tracing and error model as any
 * other. What is AI-specific is layered on top here: the channel order (priority groups,
 * weights, model lists, quotas, cooldowns), failover to the next channel on 429, 5xx or a
 * failed call before the first byte of the answer (streamed answers too: once bytes have
 * reached the app, the answer is that channel's), and the response cache for identical
 * non-streamed requests.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { DEFAULT_RETRY_BUFFER_BYTES } from '../../api/index.js';
import { AimeshError, asAimeshError } from '../../lib/errors/index.js';
import { decodePath, headerValue, pathUnder } from '../../lib/encode/index.js';
import type { Logger } from '../../lib/log/index.js';
import type { SidecarMetrics } from '../admin/index.js';
import type { CompiledAiRouting, CompiledChannel, CompiledUpstream } from '../config/compile.js';
import { DEFAULT_OUTLIER } from '../routing/index.js';
import {
  HttpTransport,
  ResponseCache,
  Upstream,
  type CallSignal,
  type StackTracing,
  type Transport,
} from '../stack/index.js';
import { ChannelSelector } from './channels.js';
import { estimatePromptTokens, requestingUsage, StreamUsage } from './usage.js';

export const AI_PREFIX = '/v1/ai/';
const MAX_BODY_BYTES = 10 * 1024 * 1024;

export interface AiRouteDeps {
  metrics: SidecarMetrics;
  log: Logger;
  tracing: StackTracing;
  /** The I/O edge per channel's upstream; the real HTTP transport unless a test passes a fake. */
  transport?: (upstream: CompiledUpstream) => Transport;
  random?: () => number;
}

interface LiveChannel {
  channel: CompiledChannel;
  upstream: Upstream;
}

export class AiRoute {
  /** Equal signatures mean equal behaviour: a reload keeps this route and its state. */
  readonly signature: string;
  private readonly selector: ChannelSelector;
  private readonly channels = new Map<string, LiveChannel>();
  private readonly cache?: ResponseCache;
  private readonly keys = new Map<string, { mtimeMs: number; key: string }>();

  constructor(
    channels: readonly CompiledChannel[],
    private readonly routing: CompiledAiRouting,
    private readonly deps: AiRouteDeps,
  ) {
    this.signature = aiRouteSignature(channels, routing);
    for (const channel of channels) {
      const compiled = channelUpstream(channel, routing);
      const upstream = new Upstream(compiled, {
        metrics: deps.metrics,
        log: deps.log,
        tracing: deps.tracing,
        transport:
          deps.transport?.(compiled) ?? new HttpTransport({ connectionsPerEndpoint: 128, log: deps.log }),
        scheme: channel.baseUrl.protocol.replace(/:$/, ''),
      });
      upstream.setEndpoints([channelEndpoint(channel)], false);
      this.channels.set(channel.name, { channel, upstream });
    }
    this.selector = new ChannelSelector(channels, routing.cooldownMs, deps.random);
    if (routing.cache) this.cache = new ResponseCache(routing.cache.maxEntries, MAX_BODY_BYTES);
  }

  async handle(
    req: IncomingMessage,
    res: ServerResponse,
    rawPath: string,
    signal: CallSignal,
  ): Promise<void> {
    // Built from decoded segments, so `..` or an encoded slash cannot reach another path on the provider.
    const [, query = ''] = splitQuery(rawPath);
    const segments = decodePath(rawPath, 'AI route path');
    const method = req.method ?? 'POST';
    const body = await readBody(req);
    const parsed = parseJson(body);
    const model = typeof parsed?.model === 'string' ? parsed.model : undefined;
    const streamed = parsed?.stream === true;
    // A streamed answer counts against the tokens quota too: ask the provider for its usage.
    const usageRequest = requestingUsage(parsed, segments);
    const cacheKey =
      this.cache && !streamed && method === 'POST'
        ? hash(`${segments.join('/')}?${query}\n${body}`)
        : undefined;
    if (cacheKey && this.answerFromCache(cacheKey, res)) return;

    const { order, skipped } = this.selector.plan(model, Date.now(), (name) =>
      (this.channels.get(name) as LiveChannel).upstream.policy.usable(Date.now()),
    );
    const failures = Object.entries(skipped).map(([name, reason]) => `${name}: ${reason}`);
    for (const { name } of order) {
      const { channel, upstream } = this.channels.get(name) as LiveChannel;
      if (!this.selector.reserve(name, Date.now())) {
        failures.push(`${name}: quota`);
        continue;
      }
      let authorization: Record<string, string>;
      try {
        authorization = this.authorization(channel);
      } catch (error) {
        this.fail(name, 0, failures, error);
        continue;
      }
      const url = pathUnder(channel.baseUrl, segments, new URLSearchParams(query));
      const askedUsage = usageRequest.added && channel.streamUsage;
      const forwarded = askedUsage ? (usageRequest.body as Buffer) : body;
      let response;
      try {
        response = await upstream.call({
          method,
          path: `${url.pathname}${url.search}`,
          headers: {
            'content-type': String(req.headers['content-type'] ?? 'application/json'),
            accept: String(req.headers.accept ?? '*/*'),
            ...authorization,
          },
          ...(method === 'GET' || method === 'HEAD' ? {} : { body: forwarded }),
          signal,
        });
      } catch (error) {
        if (signal.isAborted) throw error;
        this.fail(name, 0, failures, error);
        continue;
      }
      if (response.status === 429 || response.status >= 500) {
        response.body.resume();
        this.fail(name, response.status, failures, `${response.status}`);
        continue;
      }
      this.deps.metrics.aiRequests.inc({ provider: name, code: String(response.status) });
      const contentType = String(response.headers['content-type'] ?? 'application/json');
      res.writeHead(response.status, { 'content-type': contentType, 'x-aimesh-provider': name });
      if (streamed || contentType.startsWith('text/event-stream')) {
        res.flushHeaders();
        // From the first byte on the answer is this channel's: stream it as it comes.
        const usage = new StreamUsage(askedUsage);
        await stream(response.body, usage, res);
        // Charged when the stream ends, however it ends: an app that left gets what it read.
        this.charge(name, usage.tokens(estimatePromptTokens(parsed)));
        return;
      }
      const answer = await readAll(
        response.body,
        MAX_BODY_BYTES,
        () => new AimeshError('upstream.failed', `${name} answered with more than 10 MiB`),
      );
      this.charge(
        name,
        Number((parseJson(answer)?.usage as { total_tokens?: unknown } | undefined)?.total_tokens) || 0,
      );
      if (cacheKey && response.status === 200)
        this.cache?.set(cacheKey, {
          status: 200,
          headers: { 'content-type': contentType },
          body: answer,
          storedAt: Date.now(),
          source: name,
        });
      res.end(answer);
      return;
    }
    if (order.length === 0 && failures.length === 0)
      throw new AimeshError(
        'input.not-found',
        'no provider channels are configured: add spec.providers to the AiService',
      );
    throw new AimeshError(
      'upstream.unavailable',
      `no provider channel could answer: ${failures.join('; ')}`,
      {
        details: { failures },
      },
    );
  }

  /** Channel name → breaker and endpoint state, for the admin dump. */
  view(nowMs: number): { channel: string; endpoints: ReturnType<Upstream['policy']['view']> }[] {
    return [...this.channels.values()].map(({ channel, upstream }) => ({
      channel: channel.name,
      endpoints: upstream.policy.view(nowMs),
    }));
  }

  /** Closes once the calls that started on this route are over. */
  retire(): void {
    for (const { upstream } of this.channels.values()) upstream.retire();
  }

  async close(): Promise<void> {
    await Promise.all([...this.channels.values()].map(({ upstream }) => upstream.close()));
  }

  private answerFromCache(key: string, res: ServerResponse): boolean {
    const hit = this.cache?.get(key, this.routing.cache?.ttlMs ?? 0, Date.now());
    if (!hit) return false;
    this.deps.metrics.aiCacheHits.inc();
    res.writeHead(hit.status, {
      ...hit.headers,
      'x-aimesh-provider': hit.source ?? '',
      'x-aimesh-cache': 'hit',
    });
    res.end(hit.body);
    return true;
  }

  private charge(name: string, tokens: number): void {
    this.selector.succeeded(name, tokens, Date.now());
    if (tokens > 0) this.deps.metrics.aiTokens.inc({ provider: name }, tokens);
  }

  private fail(name: string, code: number, failures: string[], error: unknown): void {
    this.selector.failed(name, Date.now());
    this.deps.metrics.aiRequests.inc({ provider: name, code: String(code) });
    this.deps.metrics.aiFailovers.inc({ provider: name });
    failures.push(`${name}: ${typeof error === 'string' ? error : asAimeshError(error).message}`);
  }

  /**
   * The key from the channel's mounted Secret file, read again when the file changes. A
   * channel with a key file that cannot be read is not called at all: a call without its
   * credentials would only fail, or worse, reach a provider that does not need them.
   */
  private authorization(channel: CompiledChannel): Record<string, string> {
    const file = channel.apiKeyFile;
    if (!file) return {};
    try {
      const mtimeMs = statSync(file).mtimeMs;
      let cached = this.keys.get(channel.name);
      if (!cached || cached.mtimeMs !== mtimeMs) {
        const key = readFileSync(file, 'utf8').trim();
        if (!key) throw new Error('the file is empty');
        cached = { mtimeMs, key: headerValue(key, `API key of channel ${channel.name}`) };
        this.keys.set(channel.name, cached);
      }
      return { authorization: `Bearer ${cached.key}` };
    } catch (error) {
      this.keys.delete(channel.name);
      this.deps.metrics.aiKeyErrors.inc({ provider: channel.name });
      this.deps.log.error('cannot read the API key of a provider channel; skipping the channel', {
        provider: channel.name,
        file,
        error,
      });
      throw new AimeshError('dependency.failed', `API key file of ${channel.name} cannot be read`, {
        cause: error,
        details: { provider: channel.name },
      });
    }
  }
}

/** Equal for configs whose AI route behaves the same, so a reload can keep it. */
export function aiRouteSignature(channels: readonly CompiledChannel[], routing: CompiledAiRouting): string {
  return JSON.stringify([channels.map((c) => c.signature), routing]);
}

/** Failover across channels is this route's job: inside one channel the stack does not retry. */
function channelUpstream(channel: CompiledChannel, routing: CompiledAiRouting): CompiledUpstream {
  return {
    name: `provider:${channel.name}`,
    protocol: 'http',
    strategy: 'round-robin',
    timeoutMs: channel.timeoutMs,
    budget: { percent: 0, minPerSecond: 0 },
    ...(routing.breaker ? { breaker: routing.breaker } : {}),
    outlier: { ...DEFAULT_OUTLIER, consecutive5xx: Number.MAX_SAFE_INTEGER },
    retryBufferBytes: DEFAULT_RETRY_BUFFER_BYTES,
    signature: channel.signature,
  };
}

function channelEndpoint(channel: CompiledChannel) {
  const url = channel.baseUrl;
  const port = Number(url.port) || (url.protocol === 'https:' ? 443 : 80);
  return { id: channel.name, address: url.hostname.replace(/^\[|\]$/g, ''), port, meta: {}, tags: [] };
}

function splitQuery(rawPath: string): [string, string?] {
  const at = rawPath.indexOf('?');
  return at < 0 ? [rawPath] : [rawPath.slice(0, at), rawPath.slice(at + 1).split('#', 1)[0]];
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return readAll(
    req,
    MAX_BODY_BYTES,
    () => new AimeshError('input.too-large', 'request body larger than 10 MiB'),
  );
}

async function readAll(body: Readable, limit: number, tooLarge: () => AimeshError): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      body.destroy();
      throw tooLarge();
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * Streams a provider's answer to the app through `usage`, which reads it on the way; the
 * app leaving cancels the provider's stream.
 */
function stream(body: Readable, usage: StreamUsage, res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    body.once('error', (error) => {
      res.destroy(error);
      resolve();
    });
    res.once('close', () => {
      if (!body.readableEnded) body.destroy();
      resolve();
    });
    body.pipe(usage).pipe(res);
  });
}

function parseJson(body: Buffer): Record<string, unknown> | undefined {
  try {
    const value = JSON.parse(body.toString('utf8')) as unknown;
    return value && typeof value === 'object' && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    // Not JSON: no model to route by, nothing to cache by; the provider judges the body.
    return undefined;
  }
}

function hash(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
