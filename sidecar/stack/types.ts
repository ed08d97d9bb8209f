/** The shapes that travel through the stack's layers, and the I/O edge it calls. */
import { EventEmitter } from 'node:events';
import type { IncomingHttpHeaders } from 'node:http';
import type { Duplex, Readable } from 'node:stream';
import type { AimeshError } from '../../lib/errors/index.js';
import type { RoutedEndpoint } from '../routing/index.js';

/** An endpoint as the transport reaches it. */
export interface StackEndpoint extends RoutedEndpoint {
  /** scheme://host:port, the key of its connection pool. */
  origin: string;
}

export type Headers = Record<string, string | string[]>;

export interface StackRequest {
  method: string;
  /** Path and query, already encoded. */
  path: string;
  /** End-to-end headers only: the caller removed hop-by-hop ones. */
  headers: Headers;
  /** A Buffer can be resent on retries; a stream is buffered up to the upstream's limit. */
  body?: Readable | Buffer;
  /** Consistent-hash key. */
  hashKey?: string;
  /** Aborted when the caller leaves: the upstream call is cancelled. */
  signal?: CallSignal;
  /** The caller's own deadline (gRPC's grpc-timeout, a saga step's timeout); the shorter one wins. */
  timeoutMs?: number;
}

export interface StackResponse {
  status: number;
  /** End-to-end headers only. */
  headers: Headers;
  body: Readable;
  endpoint: string;
  attempts: number;
  /** The request id the upstream saw (the caller's, or a new one). */
  requestId: string;
}

/** One try against one endpoint. */
export interface TryRequest {
  method: string;
  path: string;
  headers: Headers;
  body: Readable | Buffer | null;
  signal: CallSignal;
  /** Bounds the wait for response headers of this try. */
  headersTimeoutMs?: number;
}

export interface TransportResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Readable;
  /**
   * For exchanges whose outcome is known only at their end (gRPC status in trailers):
   * resolves to whether it succeeded. Otherwise the status decides.
   */
  settled?: Promise<boolean>;
}

/** An HTTP/1.1 upgrade (websocket) to one endpoint. */
export interface UpgradeRequest {
  method: string;
  path: string;
  /** End-to-end headers; the transport adds `Connection: upgrade` and `Upgrade`. */
  headers: Headers;
  /** The protocol asked for, the value of `Upgrade`. */
  protocol: string;
  hashKey?: string;
  signal?: CallSignal;
}

/** The endpoint switched protocols: its 101 headers and the connection, now a byte stream. */
export interface Upgraded {
  headers: IncomingHttpHeaders;
  socket: Duplex;
  endpoint: string;
}

/** The I/O edge of the stack: connections to endpoints. Tests pass a fake. */
export interface Transport {
  send(endpoint: StackEndpoint, request: TryRequest): Promise<TransportResponse>;
  /** Only transports that speak HTTP/1.1 can upgrade. */
  upgrade?(
    endpoint: StackEndpoint,
    request: UpgradeRequest & { signal: CallSignal },
  ): Promise<Omit<Upgraded, 'endpoint'>>;
  /** Closes connections to origins not in `keep`. */
  retain(keep: ReadonlySet<string>): void;
  close(): Promise<void>;
}

/**
 * Cancels one call: the deadline and the caller leaving both abort it. An EventEmitter
 * that emits `abort` and carries `reason` (lib/http-client takes it as a Cancellation),
 * because an AbortController per request costs a DOMException and is measurable on the hot
 * path.
 */
export class CallSignal extends EventEmitter {
  isAborted = false;
  reason: AimeshError | undefined;

  abort(reason: AimeshError): void {
    if (this.isAborted) return;
    this.isAborted = true;
    this.reason = reason;
    this.emit('abort');
  }
}
