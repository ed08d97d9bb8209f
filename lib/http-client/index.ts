/**
 * HTTP/1.1 to one origin over Node's own client: a keep-alive connection pool with a connect
 * timeout, a wait-for-headers timeout, cancellation, and a close that lets exchanges in
 * flight finish. The sidecar's one HTTP/1.1 client (the stack's transport, Consul).
 *
 * Why not undici: its HTTP parser is llhttp compiled to WebAssembly, and a process that has
 * parsed one response holds the compiled module and its instance: about 35 MiB of resident
 * memory, measured on the sidecar (BENCHMARKS.md), where Node's parser is the same llhttp
 * built into the binary. Under load undici's per-request objects also outlived V8's young
 * generation (about 6 MB/s promoted to the old space at 1000 req/s), which Node's client's
 * did not.
 */
import { EventEmitter } from 'node:events';
import {
  Agent as HttpAgent,
  request as httpRequest,
  type ClientRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
} from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Duplex, Readable } from 'node:stream';
import { CLIENT_CLOSED_CODE, CONNECT_TIMEOUT_CODE, HEADERS_TIMEOUT_CODE } from '../errors/index.js';

export interface OriginOptions {
  /** Most connections open to the origin at once; more exchanges wait for one. */
  connections: number;
  /** How long a new connection may take to be established. */
  connectTimeoutMs: number;
  /** An idle keep-alive connection is closed after this long (or sooner, when the server says so). */
  keepAliveTimeoutMs: number;
  /** PEM CA certificates an https origin is verified with (default: Node's). */
  ca?: Buffer | string;
  /** The name verified in an https origin's certificate (default: its host). */
  servername?: string;
}

/**
 * Cancels an exchange: an AbortSignal, or an EventEmitter that emits `abort` and carries
 * `reason` (cheaper than an AbortController per request on a hot path).
 */
export type Cancellation = AbortSignal | (EventEmitter & { isAborted: boolean; reason: unknown });

export interface OriginRequest {
  method: string;
  /** Path and query, already encoded. */
  path: string;
  headers: OutgoingHttpHeaders;
  body?: Readable | Buffer | string | null;
  /** Bounds the wait for the response headers (the exchange itself is the caller's to bound). */
  headersTimeoutMs?: number;
  /** Before the headers, the exchange fails with the signal's reason; after, the body does. */
  signal?: Cancellation;
}

export interface OriginUpgrade {
  method: string;
  path: string;
  /** End-to-end headers; `connection: upgrade` and `upgrade: <protocol>` are added. */
  headers: OutgoingHttpHeaders;
  protocol: string;
  signal?: Cancellation;
}

export class OriginClient {
  private readonly agent: HttpAgent;
  private readonly send: typeof httpRequest;
  private readonly host: string;
  private readonly port: number;
  /** Exchanges whose response body is not finished yet. */
  private active = 0;
  private closed?: { done: () => void; promise: Promise<void> };

  constructor(
    readonly origin: string,
    private readonly options: OriginOptions,
  ) {
    const url = new URL(origin);
    const secure = url.protocol === 'https:';
    // URL keeps IPv6 addresses in brackets; sockets take them bare.
    this.host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    this.port = Number(url.port) || (secure ? 443 : 80);
    const pool = {
      keepAlive: true,
      maxSockets: options.connections,
      // The agent's timeout closes idle pooled sockets; exchanges have their own bounds.
      timeout: options.keepAliveTimeoutMs,
      // The connection used last is the one most likely still open at the other end.
      scheduling: 'lifo' as const,
    };
    this.agent = secure
      ? new HttpsAgent({
          ...pool,
          ...(options.ca ? { ca: options.ca } : {}),
          ...(options.servername ? { servername: options.servername } : {}),
        })
      : new HttpAgent(pool);
    this.send = secure ? (httpsRequest as typeof httpRequest) : httpRequest;
  }

  /** One exchange; resolves at the response headers with the response, whose body is the caller's to read. */
  request(request: OriginRequest): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const { signal } = request;
      let outgoing: ClientRequest;
      try {
        outgoing = this.start(request);
      } catch (error) {
        return reject(error);
      }
      this.active++;
      let response: IncomingMessage | undefined;
      let finished = false;
      const finish = () => {
        if (finished) return;
        finished = true;
        clearTimeout(headersTimer);
        stopWatching();
        this.done();
      };
      const stopWatching = signal
        ? onAbort(signal, () => {
            const reason = reasonOf(signal);
            if (response) response.destroy(reason as Error);
            else outgoing.destroy(reason as Error);
          })
        : noop;
      const headersTimer =
        request.headersTimeoutMs === undefined
          ? undefined
          : setTimeout(
              () =>
                outgoing.destroy(
                  codedError(
                    HEADERS_TIMEOUT_CODE,
                    `${this.origin} sent no response headers within ${request.headersTimeoutMs} ms`,
                  ),
                ),
              Math.max(1, request.headersTimeoutMs),
            );
      outgoing.once('response', (incoming) => {
        clearTimeout(headersTimer);
        response = incoming;
        incoming.once('close', finish);
        resolve(incoming);
      });
      // `on`, not `once`: Node may report a socket error on the request after its response
      // began, and an error without a listener would end the process.
      outgoing.on('error', (error) => {
        if (response) return; // The response reports what happens to its body.
        finish();
        reject(error);
      });
      sendBody(outgoing, request.body);
    });
  }

  /** An HTTP/1.1 upgrade (websocket): the connection leaves the pool and is the caller's. */
  upgrade(request: OriginUpgrade): Promise<{ headers: IncomingHttpHeaders; socket: Duplex }> {
    return new Promise((resolve, reject) => {
      const { signal } = request;
      let outgoing: ClientRequest;
      try {
        outgoing = this.start({
          ...request,
          headers: { ...request.headers, connection: 'upgrade', upgrade: request.protocol },
        });
      } catch (error) {
        return reject(error);
      }
      const stopWatching = signal ? onAbort(signal, () => outgoing.destroy(reasonOf(signal) as Error)) : noop;
      outgoing.once('upgrade', (incoming: IncomingMessage, socket: Duplex, head: Buffer) => {
        stopWatching();
        // Bytes the server sent right after its 101 belong to the upgraded stream.
        if (head.length > 0) socket.unshift(head);
        resolve({ headers: incoming.headers, socket });
      });
      outgoing.once('response', (incoming: IncomingMessage) => {
        stopWatching();
        incoming.resume();
        reject(new Error(`answered ${incoming.statusCode} instead of switching protocols`));
      });
      outgoing.on('error', (error) => {
        stopWatching();
        reject(error);
      });
      outgoing.end();
    });
  }

  /** Refuses new exchanges; closes the connections once those in flight are finished. */
  close(): Promise<void> {
    if (!this.closed) {
      const closed = Promise.withResolvers<void>();
      this.closed = { done: closed.resolve, promise: closed.promise };
      if (this.active === 0) this.destroy();
    }
    return this.closed.promise;
  }

  private done(): void {
    if (--this.active === 0 && this.closed) this.destroy();
  }

  private destroy(): void {
    this.agent.destroy();
    this.closed?.done();
  }

  /** Starts an exchange, or throws why it cannot: closed, cancelled, or headers Node refuses to send. */
  private start(request: {
    method: string;
    path: string;
    headers: OutgoingHttpHeaders;
    signal?: Cancellation | undefined;
  }): ClientRequest {
    if (this.closed) throw closedError(this.origin);
    if (request.signal && isAborted(request.signal)) throw reasonOf(request.signal);
    const outgoing = this.send({
      agent: this.agent,
      host: this.host,
      port: this.port,
      method: request.method,
      path: request.path,
      headers: request.headers,
    });
    this.boundConnect(outgoing);
    return outgoing;
  }

  /** A connection that is not established within the connect timeout fails the exchange. */
  private boundConnect(outgoing: ClientRequest): void {
    outgoing.once('socket', (socket) => {
      if (!(socket as { connecting?: boolean }).connecting) return;
      const timer = setTimeout(
        () =>
          outgoing.destroy(
            codedError(
              CONNECT_TIMEOUT_CODE,
              `connecting to ${this.origin} took longer than ${this.options.connectTimeoutMs} ms`,
            ),
          ),
        this.options.connectTimeoutMs,
      );
      const stop = () => clearTimeout(timer);
      socket.once('connect', stop);
      socket.once('secureConnect', stop);
      socket.once('close', stop);
    });
  }
}

/** Reads a whole response body as text, within `timeoutMs`. */
export function readText(response: IncomingMessage, timeoutMs: number, what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const timer = setTimeout(
      () =>
        response.destroy(codedError('ETIMEDOUT', `${what}: the body did not arrive within ${timeoutMs} ms`)),
      timeoutMs,
    );
    response.on('data', (chunk: Buffer) => chunks.push(chunk));
    response.once('end', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
    response.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

function sendBody(outgoing: ClientRequest, body: OriginRequest['body']): void {
  if (body === undefined || body === null) outgoing.end();
  else if (typeof body === 'string' || Buffer.isBuffer(body)) outgoing.end(body);
  else {
    // A body that fails (the caller's upload cut) fails the exchange; pipe alone would not.
    body.once('error', (error) => outgoing.destroy(error));
    body.pipe(outgoing);
  }
}

function isAborted(signal: Cancellation): boolean {
  return signal instanceof EventEmitter ? signal.isAborted : signal.aborted;
}

function reasonOf(signal: Cancellation): unknown {
  return signal.reason ?? new Error('the exchange was cancelled');
}

/** Calls `listener` once when the signal aborts; returns what stops watching. */
function onAbort(signal: Cancellation, listener: () => void): () => void {
  if (signal instanceof EventEmitter) {
    signal.once('abort', listener);
    return () => signal.off('abort', listener);
  }
  signal.addEventListener('abort', listener, { once: true });
  return () => signal.removeEventListener('abort', listener);
}

function codedError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

function closedError(origin: string): Error {
  return codedError(CLIENT_CLOSED_CODE, `the connections to ${origin} are closed`);
}

function noop(): void {}
