/** A fake of the stack's only I/O edge: scripted answers per try, and a log of what was sent. */
import { Readable } from 'node:stream';
import type { DiscoveredEndpoint } from '../../../sidecar/discovery/index.js';
import type {
  StackEndpoint,
  Transport,
  TransportResponse,
  TryRequest,
} from '../../../sidecar/stack/index.js';

export interface SentTry {
  endpoint: string;
  origin: string;
  method: string;
  path: string;
  headers: TryRequest['headers'];
  body: string;
  /** Set when the try was aborted (deadline, caller left). */
  aborted?: string;
}

export type Script = (
  endpoint: StackEndpoint,
  request: TryRequest,
  tryNumber: number,
) => TransportResponse | Promise<TransportResponse>;

export class FakeTransport implements Transport {
  readonly sent: SentTry[] = [];
  closed = false;

  constructor(private readonly script: Script) {}

  async send(endpoint: StackEndpoint, request: TryRequest): Promise<TransportResponse> {
    const body =
      request.body === null
        ? ''
        : Buffer.isBuffer(request.body)
          ? request.body.toString()
          : Buffer.concat(await request.body.toArray()).toString();
    const sent: SentTry = {
      endpoint: endpoint.id,
      origin: endpoint.origin,
      method: request.method,
      path: request.path,
      headers: request.headers,
      body,
    };
    this.sent.push(sent);
    const { signal } = request;
    return new Promise((resolve, reject) => {
      // Like undici: an abort before the answer rejects, after it destroys the body.
      const beforeAnswer = () => {
        sent.aborted = signal.reason?.code;
        reject(signal.reason);
      };
      if (signal.isAborted) return beforeAnswer();
      signal.once('abort', beforeAnswer);
      Promise.resolve(this.script(endpoint, request, this.sent.length)).then(
        (response) => {
          signal.off('abort', beforeAnswer);
          const afterAnswer = () => {
            sent.aborted = signal.reason?.code;
            response.body.destroy(signal.reason);
          };
          signal.once('abort', afterAnswer);
          response.body.once('close', () => signal.off('abort', afterAnswer));
          resolve(response);
        },
        (error: unknown) => {
          signal.off('abort', beforeAnswer);
          reject(error instanceof Error ? error : new Error(String(error)));
        },
      );
    });
  }

  retain(): void {}

  async close(): Promise<void> {
    this.closed = true;
  }
}

export function answer(status: number, body = '', headers: Record<string, string> = {}): TransportResponse {
  return { status, headers, body: Readable.from(body ? [Buffer.from(body)] : []) };
}

/** An answer whose headers come at once and whose body never ends. */
export function stalledAnswer(status = 200): TransportResponse {
  return { status, headers: {}, body: new Readable({ read() {} }) };
}

/** A socket error as node reports it. */
export function networkError(code: string): Error {
  return Object.assign(new Error(`connect ${code} 10.0.0.1:80`), { code });
}

export function endpoints(...ids: string[]): DiscoveredEndpoint[] {
  return ids.map((id, i) => ({ id, address: `10.0.0.${i + 1}`, port: 8080, meta: {}, tags: [] }));
}
