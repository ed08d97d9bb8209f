/**
 * One loopback port that speaks HTTP/1.1 and h2c (HTTP/2 with prior knowledge, what gRPC
 * clients send to an http:// target). Node's http2 server cannot fall back to HTTP/1.1
 * without TLS, so the first bytes of each connection decide which server gets it.
 *
 * The edge is bounded the way Envoy's and HAProxy's listeners are (see CompiledEdge):
 * a connection that sends nothing, headers that trickle in, a request that never ends, an
 * idle keep-alive connection, an oversized header block, too many connections or streams
 * all have an end, so no client holds the sidecar's sockets or memory for ever.
 */
import { createServer as createHttp1Server, type IncomingMessage, type ServerResponse } from 'node:http';
import {
  createServer as createHttp2Server,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type ServerHttp2Session,
} from 'node:http2';
import { createServer as createNetServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { AimeshError } from '../../lib/errors/index.js';
import { compileEdge, type CompiledEdge } from '../config/compile.js';
import { sendErrorOnSocket } from '../error-response.js';

const HTTP2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

/**
 * HTTP/2 requests arrive through Node's compatibility API, which has the shape of the
 * HTTP/1 objects; `httpVersionMajor === 2` tells them apart.
 */
export type Handler = (request: IncomingMessage, response: ServerResponse) => void;

/** An HTTP/1.1 upgrade request (websocket): the socket is the handler's from then on. */
export type UpgradeHandler = (request: IncomingMessage, socket: Duplex, head: Buffer) => void;

/** Without a handler for them, upgrades are refused rather than served as plain requests. */
const refuseUpgrades: UpgradeHandler = (request, socket) =>
  sendErrorOnSocket(
    socket,
    new AimeshError(
      'input.unsupported',
      `upgrade to ${JSON.stringify(request.headers.upgrade)} is not supported here`,
    ),
  );

/** Why the edge closed a connection on its own (Node's 408 and 431 are not counted here). */
export type EdgeCloseReason = 'connection-limit' | 'first-byte-timeout';

export interface ListenerOptions {
  /** Timeouts and limits of client connections; the schema's defaults when unset. */
  edge?: CompiledEdge;
  /** HTTP/1.1 upgrades (websocket); refused with 501 when unset. */
  upgrade?: UpgradeHandler;
  /** Told each time the edge closes a connection itself, for a metric. */
  onEdgeClose?: (reason: EdgeCloseReason) => void;
}

export interface DualListener {
  server: Server;
  port: number;
  /**
   * New limits for connections accepted from now on (a config reload); connections
   * already open keep the limits they were accepted with.
   */
  setEdge: (edge: CompiledEdge) => void;
  /** Stops accepting, waits for in-flight requests up to `graceMs`, then closes what is left. */
  close: (graceMs: number) => Promise<void>;
}

/** The HTTP/1 and HTTP/2 servers one set of limits makes; a socket stays with the pair it was given to. */
interface ServerPair {
  edge: CompiledEdge;
  http1: ReturnType<typeof createHttp1Server>;
  http2: ReturnType<typeof createHttp2Server>;
  sockets: number;
}

export async function listenHttp1AndH2c(
  host: string,
  port: number,
  handler: Handler,
  options: ListenerOptions = {},
): Promise<DualListener> {
  const { edge = compileEdge(), upgrade = refuseUpgrades, onEdgeClose = () => undefined } = options;
  const sessions = new Set<ServerHttp2Session>();
  const pairs = new Set<ServerPair>();
  const serversFor = (limits: CompiledEdge): ServerPair => {
    const pair = { ...createServers(limits, handler, upgrade, sessions), sockets: 0 };
    pairs.add(pair);
    return pair;
  };
  let current = serversFor(edge);
  /** A replaced pair is closed once its last connection is gone (it has a timer running). */
  const release = (pair: ServerPair) => {
    if (pair === current || pair.sockets > 0) return;
    pairs.delete(pair);
    pair.http1.close();
  };
  const sockets = new Set<Socket>();
  const server = createNetServer((socket) => {
    const pair = current;
    pair.sockets++;
    sockets.add(socket);
    // Small responses (headers, then a body chunk) must not wait for delayed ACKs (Nagle).
    socket.setNoDelay(true);
    socket.once('close', () => {
      sockets.delete(socket);
      pair.sockets--;
      release(pair);
    });
    sniff(socket, pair.edge.firstByteTimeoutMs, onEdgeClose, (isHttp2) =>
      (isHttp2 ? pair.http2 : pair.http1).emit('connection', socket),
    );
  });
  // Over the limit, Node closes a new connection as soon as it is accepted.
  server.maxConnections = edge.maxConnections;
  server.on('drop', () => onEdgeClose('connection-limit'));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address();
  return {
    server,
    port: typeof address === 'object' && address ? address.port : port,
    setEdge: (next) => {
      if (JSON.stringify(next) === JSON.stringify(current.edge)) return;
      const previous = current;
      current = serversFor(next);
      server.maxConnections = next.maxConnections;
      release(previous);
    },
    close: async (graceMs) => {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          for (const socket of sockets) socket.destroy();
          resolve();
        }, graceMs);
        timer.unref();
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        for (const pair of pairs) pair.http1.closeIdleConnections();
        // GOAWAY: clients finish their streams and open new ones elsewhere.
        for (const session of sessions) session.close();
      });
      // Stops the header and request timeout checks (the servers never listened themselves).
      for (const pair of pairs) pair.http1.close();
    },
  };
}

function createServers(
  edge: CompiledEdge,
  handler: Handler,
  upgrade: UpgradeHandler,
  sessions: Set<ServerHttp2Session>,
): Omit<ServerPair, 'sockets'> {
  const http1 = createHttp1Server(
    {
      keepAliveTimeout: edge.idleTimeoutMs,
      headersTimeout: edge.headersTimeoutMs,
      requestTimeout: edge.requestTimeoutMs,
      maxHeaderSize: edge.maxHeaderBytes,
      // How often the header and request timeouts are checked: their granularity.
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(edge.headersTimeoutMs / 2))),
      // `Upgrade: h2c` is an offer a server may ignore (RFC 9113 dropped it; gRPC clients use
      // prior knowledge): that request is served as HTTP/1.1. Every other upgrade is one.
      shouldUpgradeCallback: (req: IncomingMessage) => !/^\s*h2c\s*$/i.test(req.headers.upgrade ?? ''),
    },
    handler,
  );
  http1.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    // An upgraded connection is a byte stream both ways: idle for too long, it is closed.
    (socket as Socket).setTimeout(edge.idleTimeoutMs, () => socket.destroy());
    upgrade(req, socket, head);
  });
  // Node checks headersTimeout and requestTimeout only for servers that listened: it starts
  // tracking connections on 'listening'. This server is handed its sockets through
  // 'connection' and never listens, so it is told it does (test/unit/hostile/proxy-edge
  // proves slowloris is cut, which fails if Node ever changes this).
  http1.emit('listening');
  const http2 = createHttp2Server(
    {
      settings: { maxConcurrentStreams: edge.maxConcurrentStreams, maxHeaderListSize: edge.maxHeaderBytes },
    },
    (req: Http2ServerRequest, res: Http2ServerResponse) =>
      handler(req as unknown as IncomingMessage, res as unknown as ServerResponse),
  );
  http2.on('session', (session: ServerHttp2Session) => {
    sessions.add(session);
    closeWhenIdle(session, edge.idleTimeoutMs);
    session.once('close', () => sessions.delete(session));
  });
  return { edge, http1, http2 };
}

/**
 * Reads the first bytes until they tell HTTP/2's preface from anything else: bytes that
 * diverge from the preface go to HTTP/1 at once, a strict prefix of it ("PRI * HT", a
 * first TCP segment cut short) waits for more. A connection that has not decided within
 * the first-byte timeout, or ends first, is closed.
 */
function sniff(
  socket: Socket,
  timeoutMs: number,
  onEdgeClose: (reason: EdgeCloseReason) => void,
  decide: (isHttp2: boolean) => void,
): void {
  let head: Buffer = Buffer.alloc(0);
  const timer = setTimeout(() => {
    onEdgeClose('first-byte-timeout');
    socket.destroy();
  }, timeoutMs);
  const onEnd = () => socket.destroy();
  // Until a server has the socket, nothing else handles its errors (a reset while sniffing).
  const onError = () => socket.destroy();
  const onReadable = () => {
    let chunk: Buffer | null;
    while ((chunk = socket.read() as Buffer | null) !== null)
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
    if (head.length === 0) return;
    const compared = Math.min(head.length, HTTP2_PREFACE.length);
    const prefaceSoFar = head.subarray(0, compared).equals(HTTP2_PREFACE.subarray(0, compared));
    if (prefaceSoFar && head.length < HTTP2_PREFACE.length) return;
    clearTimeout(timer);
    socket.off('readable', onReadable);
    socket.off('end', onEnd);
    socket.off('error', onError);
    socket.unshift(head);
    decide(prefaceSoFar);
  };
  socket.on('readable', onReadable);
  socket.once('end', onEnd);
  socket.on('error', onError);
  socket.once('close', () => clearTimeout(timer));
}

/**
 * An HTTP/2 connection with no open stream for `idleMs` is sent GOAWAY and closed (the
 * HTTP/1 keep-alive timeout's counterpart). Counted from the session's start too, so a
 * client that sends the preface and then nothing is closed as well.
 */
function closeWhenIdle(session: ServerHttp2Session, idleMs: number): void {
  let open = 0;
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    timer = setTimeout(() => session.close(), idleMs);
    timer.unref();
  };
  arm();
  session.on('stream', (stream) => {
    open++;
    clearTimeout(timer);
    stream.once('close', () => {
      if (--open === 0 && !session.closed && !session.destroyed) arm();
    });
  });
  session.once('close', () => clearTimeout(timer));
}
