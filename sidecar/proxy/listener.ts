/**
 * One loopback port that speaks HTTP/1.1 and h2c (HTTP/2 with prior knowledge, what gRPC
 * clients send to an http:// target). Node's http2 server cannot fall back to HTTP/1.1
 * without TLS, so the first bytes of each connection decide which server gets it.
 */
import { createServer as createHttp1Server, type IncomingMessage, type ServerResponse } from 'node:http';
import {
  createServer as createHttp2Server,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type ServerHttp2Session,
} from 'node:http2';
import { createServer as createNetServer, type Server, type Socket } from 'node:net';

const HTTP2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

/**
 * HTTP/2 requests arrive through Node's compatibility API, which has the shape of the
 * HTTP/1 objects; `httpVersionMajor === 2` tells them apart.
 */
export type Handler = (request: IncomingMessage, response: ServerResponse) => void;

export interface DualListener {
  server: Server;
  port: number;
  /** Stops accepting, waits for in-flight requests up to `graceMs`, then closes what is left. */
  close: (graceMs: number) => Promise<void>;
}

export async function listenHttp1AndH2c(host: string, port: number, handler: Handler): Promise<DualListener> {
  const http1 = createHttp1Server({ keepAliveTimeout: 65_000 }, handler);
  const http2 = createHttp2Server({}, (req: Http2ServerRequest, res: Http2ServerResponse) =>
    handler(req as unknown as IncomingMessage, res as unknown as ServerResponse),
  );
  const sessions = new Set<ServerHttp2Session>();
  http2.on('session', (session: ServerHttp2Session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
  });
  const sockets = new Set<Socket>();
  const server = createNetServer((socket) => {
    sockets.add(socket);
    // Small responses (headers, then a body chunk) must not wait for delayed ACKs (Nagle).
    socket.setNoDelay(true);
    socket.once('close', () => sockets.delete(socket));
    socket.once('readable', () => {
      const head = socket.read(HTTP2_PREFACE.length) as Buffer | null;
      const chunk = head ?? (socket.read() as Buffer | null);
      if (chunk) socket.unshift(chunk);
      const isHttp2 =
        chunk !== null &&
        chunk.subarray(0, HTTP2_PREFACE.length).equals(HTTP2_PREFACE.subarray(0, chunk.length));
      (isHttp2 ? http2 : http1).emit('connection', socket);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address();
  return {
    server,
    port: typeof address === 'object' && address ? address.port : port,
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
        http1.closeIdleConnections();
        // GOAWAY: clients finish their streams and open new ones elsewhere.
        for (const session of sessions) session.close();
      });
    },
  };
}
