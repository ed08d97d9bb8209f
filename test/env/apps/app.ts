/**
 * The app in the test node's pods, one image for every service of an example: it answers
 * HTTP/1.1 and gRPC over h2c on every port in APP_PORTS (each service of an example declares
 * its own port and protocol, and the image cannot know which service it runs as).
 *
 * - health: GET /health, /healthz, /ready; grpc.health.v1.Health/Check answers SERVING.
 * - any other request (HTTP/1.1, or h2c without a gRPC content type): 200 with JSON naming this pod, and ids a saga step can template
 *   (validationId, recordId, sha256, anchorId). A path segment `slow-<ms>` delays the answer,
 *   so a test can keep a call in flight.
 * - /loopback/<port>/<path>: forwards the request to 127.0.0.1:<port> inside the pod (the
 *   sidecar's outbound proxy 4700 and saga API 4702 listen on the pod's loopback only), so a
 *   test on the host acts as this app would, the saga API token included.
 *
 * It runs with Node's type stripping (`node app.ts`), so it imports only node: modules.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createH2Server, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { createServer as createTcpServer, type Socket } from 'node:net';
import { hostname } from 'node:os';
import { Duplex } from 'node:stream';

const SIDECAR_PORTS = new Set([4700, 4701, 4702, 4703]);
const CONTROL_PORTS = new Set([4702, 4703]);
const pod = hostname();
const ports = (process.env.APP_PORTS ?? '8080').split(',').map(Number);

const http1 = createHttpServer((req, res) => void handleHttp(req, res));
const h2c = createH2Server();
h2c.on('stream', (stream, headers) => void handleStream(stream, headers));

// Every port speaks both HTTP/1.1 and h2c, like a gRPC server that also serves JSON on its
// port: the example's saga calls its gRPC agent with plain HTTP. The first bytes tell them
// apart (h2c starts with the "PRI * HTTP/2.0" preface).
for (const port of ports) {
  createTcpServer((socket) => {
    socket.once('data', (first: Buffer) => {
      socket.pause();
      if (first.subarray(0, 3).toString() === 'PRI') {
        h2c.emit('connection', replaying(socket, first));
      } else {
        socket.unshift(first);
        http1.emit('connection', socket);
      }
      socket.resume();
    });
  }).listen(port, '0.0.0.0', () => console.log(`app ${pod} listening on ${port}`));
}

/**
 * The socket as a stream that yields `first` again: the HTTP/2 server reads from the socket's
 * native handle, so bytes put back with unshift() never reach it, while a plain Duplex is read
 * through JavaScript.
 */
function replaying(socket: Socket, first: Buffer): Duplex {
  const duplex = new Duplex({
    read: () => socket.resume(),
    write: (chunk: Buffer, _encoding, done) => socket.write(chunk, done),
    final: (done) => socket.end(done),
    destroy: (error, done) => {
      socket.destroy(error ?? undefined);
      done(error);
    },
  });
  duplex.push(first);
  socket.on('data', (chunk: Buffer) => {
    if (!duplex.push(chunk)) socket.pause();
  });
  socket.once('end', () => duplex.push(null));
  socket.once('error', (error) => duplex.destroy(error));
  socket.once('close', () => duplex.destroy());
  return duplex;
}

process.on('SIGTERM', () => {
  console.log(`app ${pod} stopping`);
  process.exit(0);
});

async function handleHttp(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = req.url ?? '/';
  const loopback = /^\/loopback\/(\d+)(\/.*)$/.exec(url);
  if (loopback) return forwardToLoopback(Number(loopback[1]), loopback[2] ?? '/', req, res);
  if (req.method === 'GET' && /^\/(health|healthz|ready)$/.test(url)) {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    return;
  }
  const body = await readBody(req);
  await delayFor(url);
  res
    .writeHead(200, { 'content-type': 'application/json' })
    .end(JSON.stringify(answer(req.method, url, req.headers, body)));
}

async function handleStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): Promise<void> {
  const path = String(headers[':path'] ?? '/');
  const grpc = String(headers['content-type'] ?? '').startsWith('application/grpc');
  const chunks: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  await new Promise((resolve) => stream.once('end', resolve));
  if (!grpc) {
    await delayFor(path);
    const body = Buffer.concat(chunks).toString();
    stream.respond({ ':status': 200, 'content-type': 'application/json' });
    stream.end(JSON.stringify(answer(String(headers[':method']), path, headers, body)));
    return;
  }
  // HealthCheckResponse{status: SERVING} is field 1 = 1: bytes 0x08 0x01. Other methods get an
  // empty message, which every proto3 response type accepts.
  const message = path === '/grpc.health.v1.Health/Check' ? Buffer.from([0x08, 0x01]) : Buffer.alloc(0);
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
  stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
  stream.end(frame);
}

function answer(
  method: string | undefined,
  path: string,
  headers: IncomingHttpHeaders,
  body: string,
): object {
  const id = randomUUID();
  return {
    pod,
    method,
    path,
    idempotencyKey: headers['idempotency-key'] ?? null,
    body: body.length > 0 ? body : null,
    id,
    validationId: `validation-${id}`,
    recordId: `record-${id}`,
    sha256: id.replace(/-/g, ''),
    anchorId: `anchor-${id}`,
  };
}

async function forwardToLoopback(
  port: number,
  path: string,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  if (!SIDECAR_PORTS.has(port)) {
    res
      .writeHead(400)
      .end(`loopback forwarding is only for the sidecar's ports ${[...SIDECAR_PORTS].join(', ')}`);
    return;
  }
  const body = await readBody(req);
  try {
    const response = await fetch(`http://127.0.0.1:${port}${path}`, {
      method: req.method ?? 'GET',
      headers: {
        'content-type': String(req.headers['content-type'] ?? 'application/json'),
        ...controlAuth(port),
      },
      ...(body.length > 0 ? { body } : {}),
      signal: AbortSignal.timeout(120_000),
    });
    res.writeHead(response.status, { 'content-type': response.headers.get('content-type') ?? 'text/plain' });
    res.end(await response.text());
  } catch (error) {
    res.writeHead(502, { 'content-type': 'text/plain' }).end(`loopback ${port}: ${String(error)}`);
  }
}

/**
 * What an app does to call the saga control API: the token the sidecar wrote into the file
 * named by AIMESH_CONTROL_TOKEN_FILE, read at each call so a restarted sidecar's is used.
 */
function controlAuth(port: number): Record<string, string> {
  const file = process.env.AIMESH_CONTROL_TOKEN_FILE;
  if (!CONTROL_PORTS.has(port) || !file) return {};
  return { authorization: `Bearer ${readFileSync(file, 'utf8').trim()}` };
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    req.on('data', (chunk: Buffer) => (text += chunk.toString()));
    req.once('end', () => resolve(text));
    req.once('error', reject);
  });
}

async function delayFor(path: string): Promise<void> {
  const slow = /\/slow-(\d{1,6})(\/|$)/.exec(path);
  if (slow) await new Promise((resolve) => setTimeout(resolve, Number(slow[1])));
}
