import { afterEach, describe, expect, it } from '@jest/globals';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { classifyNetworkError } from '../../../lib/errors/index.js';
import { OriginClient, readText } from '../../../lib/http-client/index.js';
import { CallSignal } from '../../../sidecar/stack/index.js';

/**
 * The sidecar's HTTP/1.1 client against real Node servers on loopback: connections are
 * reused, the wait for headers is bounded, a cancellation reaches the exchange before and
 * after the headers, a close waits for exchanges in flight, and an upgrade hands over the
 * connection with the bytes that came after the 101.
 */
const servers: Server[] = [];
const clients: OriginClient[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    server.close();
  }
});

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<Server> {
  const server = createServer(handler);
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

function clientOf(server: Server, options: Partial<ConstructorParameters<typeof OriginClient>[1]> = {}) {
  const { port } = server.address() as AddressInfo;
  const client = new OriginClient(`http://127.0.0.1:${port}`, {
    connections: 4,
    connectTimeoutMs: 2000,
    keepAliveTimeoutMs: 5000,
    ...options,
  });
  clients.push(client);
  return client;
}

describe('OriginClient', () => {
  it('reuses one keep-alive connection for exchanges one after another', async () => {
    const server = await serve((req, res) => res.end(`${req.socket.remotePort}`));
    const client = clientOf(server);
    const ports: string[] = [];
    for (let i = 0; i < 3; i++) {
      const response = await client.request({ method: 'GET', path: '/', headers: { host: 'a' } });
      expect(response.statusCode).toBe(200);
      ports.push(await readText(response, 1000, 'test'));
    }
    expect(new Set(ports).size).toBe(1);
  });

  it('sends a buffered body and the headers it is given', async () => {
    const server = await serve(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      res.end(JSON.stringify({ host: req.headers.host, body: Buffer.concat(chunks).toString() }));
    });
    const response = await clientOf(server).request({
      method: 'POST',
      path: '/x?y=1',
      headers: { host: 'orders', 'content-type': 'text/plain' },
      body: Buffer.from('hello'),
    });
    expect(JSON.parse(await readText(response, 1000, 'test'))).toEqual({ host: 'orders', body: 'hello' });
  });

  it('fails with a timeout the classifier names when no headers come in time', async () => {
    const server = await serve(() => undefined);
    const failure = await clientOf(server)
      .request({ method: 'GET', path: '/', headers: {}, headersTimeoutMs: 50 })
      .catch((error: unknown) => error);
    expect(failure).toMatchObject({ code: 'ERR_HEADERS_TIMEOUT' });
    expect(classifyNetworkError(failure)).toBe('timeout');
  });

  it('fails with the cancellation reason before the headers, and cuts the body after them', async () => {
    let respond: (() => void) | undefined;
    const server = await serve((_req, res) => {
      respond = () => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('first part');
      };
    });
    const client = clientOf(server);
    const before = new CallSignal();
    const pending = client.request({ method: 'GET', path: '/', headers: {}, signal: before });
    await new Promise((resolve) => setTimeout(resolve, 50));
    before.abort(Object.assign(new Error('caller left'), { code: 'TEST' }) as never);
    await expect(pending).rejects.toThrow('caller left');

    const after = new AbortController();
    const answered = client.request({ method: 'GET', path: '/', headers: {}, signal: after.signal });
    await new Promise((resolve) => setTimeout(resolve, 50));
    respond?.();
    const response = await answered;
    expect(response.statusCode).toBe(200);
    const body = readText(response, 2000, 'test');
    after.abort(new Error('deadline passed'));
    // The body fails with the reason: a reader never takes the part it got for the whole.
    await expect(body).rejects.toThrow('deadline passed');
    expect(response.complete).toBe(false);
  });

  it('fails the body, and only the body, when the server cuts the connection mid-answer', async () => {
    const server = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('part of it');
      setTimeout(() => res.socket?.destroy(), 20);
    });
    const response = await clientOf(server).request({ method: 'GET', path: '/', headers: {} });
    await expect(readText(response, 2000, 'test')).rejects.toMatchObject({ code: 'ECONNRESET' });
    expect(response.complete).toBe(false);
  });

  it('refuses a refused connection with a connect failure', async () => {
    const server = await serve(() => undefined);
    const client = clientOf(server);
    server.close();
    await once(server, 'close');
    const failure = await client.request({ method: 'GET', path: '/', headers: {} }).catch((e: unknown) => e);
    expect(classifyNetworkError(failure)).toBe('connect-failure');
  });

  it('closes only once the exchanges in flight are over, and refuses new ones', async () => {
    let finish: (() => void) | undefined;
    const server = await serve((_req, res) => {
      res.writeHead(200);
      res.write('part');
      finish = () => res.end(' rest');
    });
    const client = clientOf(server);
    const response = await client.request({ method: 'GET', path: '/', headers: {} });
    const body = readText(response, 2000, 'test');
    let closed = false;
    const closing = client.close().then(() => (closed = true));
    const refused = await client.request({ method: 'GET', path: '/', headers: {} }).catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: 'ERR_CLIENT_CLOSED' });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(closed).toBe(false);
    finish?.();
    expect(await body).toBe('part rest');
    await closing;
    expect(closed).toBe(true);
  });

  it('hands over an upgraded connection with the bytes sent right after the 101', async () => {
    const server = await serve((_req, res) => res.end());
    server.on('upgrade', (req: IncomingMessage, socket: Socket) => {
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: ${req.headers.upgrade}\r\n\r\nhello`,
      );
      socket.on('data', (data) => socket.write(data));
    });
    const { headers, socket } = await clientOf(server).upgrade({
      method: 'GET',
      path: '/ws',
      headers: {},
      protocol: 'echo',
    });
    expect(headers.upgrade).toBe('echo');
    const received: Buffer[] = [];
    socket.on('data', (data: Buffer) => received.push(data));
    socket.write(' world');
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(Buffer.concat(received).toString()).toBe('hello world');
    socket.destroy();
  });

  it('refuses an upgrade the server answers without switching protocols', async () => {
    const server = await serve((_req, res) => {
      res.writeHead(404);
      res.end();
    });
    await expect(
      clientOf(server).upgrade({ method: 'GET', path: '/ws', headers: {}, protocol: 'echo' }),
    ).rejects.toThrow('answered 404 instead of switching protocols');
  });
});
