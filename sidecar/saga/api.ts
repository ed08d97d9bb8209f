/**
 * The saga control API, HTTP JSON on the sidecar's control port:
 *   POST /v1/sagas/<saga>/executions      {"input": {...}, "idempotencyKey": "..."} → 201, or 200 with the existing one
 *   GET  /v1/executions/<id>[?wait=30s]    the execution; with wait, once it is terminal or the time is up
 *   GET  /v1/executions[?saga=&state=]     executions, filtered
 *   POST /v1/executions/<id>/cancel        compensate (before the pivot only)
 *   GET  /v1/executions/<id>/events        server-sent events, one per state change
 * Every call needs `authorization: Bearer <token>` when a token is configured (./auth.ts).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { durationMs } from '../../api/index.js';
import { decodePath } from '../../lib/encode/index.js';
import { AimeshError } from '../../lib/errors/index.js';
import type { Logger } from '../../lib/log/index.js';
import { sendError } from '../error-response.js';
import type { ControlAuth } from './auth.js';
import type { SagaEngine } from './engine.js';

const MAX_BODY_BYTES = 1024 * 1024;

export async function startSagaApi(
  engine: SagaEngine,
  host: string,
  port: number,
  log: Logger,
  auth?: ControlAuth,
): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    authenticated(auth, req, res)
      .then(() => handle(engine, req, res))
      .catch((error: unknown) => {
        if (!(error instanceof AimeshError) || error.code.startsWith('state.') || error.code === 'internal')
          log.error('control API request failed', { method: req.method, url: req.url, error });
        sendError(res, error);
      });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address();
  return { server, port: typeof address === 'object' && address ? address.port : port };
}

/** Before anything else is read: an unauthenticated caller learns nothing, not even which paths exist. */
async function authenticated(auth: ControlAuth | undefined, req: IncomingMessage, res: ServerResponse) {
  if (!auth) return;
  try {
    auth(header(req, 'authorization'));
  } catch (error) {
    res.setHeader('www-authenticate', 'Bearer realm="aimesh-control"');
    throw error;
  }
}

async function handle(engine: SagaEngine, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://control');
  const parts = decodePath(url.pathname, 'control API path');
  if (
    req.method === 'POST' &&
    parts.length === 4 &&
    parts[0] === 'v1' &&
    parts[1] === 'sagas' &&
    parts[3] === 'executions'
  ) {
    const body = await readJson(req);
    const key = (body.idempotencyKey as string | undefined) ?? header(req, 'idempotency-key');
    const { execution, created } = await engine.start(parts[2] as string, body.input, key ?? '');
    return send(res, created ? 201 : 200, execution);
  }
  if (parts[0] !== 'v1' || parts[1] !== 'executions') {
    throw new AimeshError(
      'input.not-found',
      `no such endpoint ${req.method} ${url.pathname}; see the list in sidecar/saga/api.ts or docs`,
    );
  }
  const id = parts[2];
  if (req.method === 'GET' && !id) {
    return send(
      res,
      200,
      await engine.list({
        saga: url.searchParams.get('saga') ?? undefined,
        state: url.searchParams.get('state') ?? undefined,
      }),
    );
  }
  if (req.method === 'GET' && id && parts.length === 3) {
    const wait = url.searchParams.get('wait');
    if (wait && !/^([0-9]+(\.[0-9]+)?(ms|s|m))+$/.test(wait))
      throw new AimeshError('input.invalid', `wait must be a duration such as "30s" (got "${wait}")`);
    return send(
      res,
      200,
      wait ? await engine.waitFor(id, Math.min(durationMs(wait), 300_000)) : await engine.get(id),
    );
  }
  if (req.method === 'POST' && id && parts[3] === 'cancel') return send(res, 200, await engine.cancel(id));
  if (req.method === 'GET' && id && parts[3] === 'events') {
    const current = await engine.get(id);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.write(`data: ${JSON.stringify(current)}\n\n`);
    const stop = engine.onChange(id, (execution) => res.write(`data: ${JSON.stringify(execution)}\n\n`));
    res.once('close', stop);
    return;
  }
  throw new AimeshError('input.not-found', `no such endpoint ${req.method} ${url.pathname}`);
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new AimeshError('input.too-large', 'request body larger than 1 MiB');
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new AimeshError('input.invalid', `request body is not valid JSON: ${(error as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new AimeshError(
      'input.invalid',
      'request body must be a JSON object: {"input": {...}, "idempotencyKey": "..."}',
    );
  }
  return parsed as Record<string, unknown>;
}

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return void res.end();
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(`${JSON.stringify(body)}\n`);
}
