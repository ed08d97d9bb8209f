import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConsulClient, ConsulRegistration } from '../../sidecar/discovery/index.js';

/**
 * Real HTTP step services for saga tests, registered in Consul. Each applies a call's
 * effect once per Idempotency-Key (a repeat gets the first answer back), as a step
 * service must for at-least-once delivery, and records every call so tests can check
 * order and duplicates.
 */
export interface CallRecord {
  service: string;
  method: string;
  path: string;
  key: string;
  at: number;
}

export interface StepBehaviour {
  /** Answer this status (no effect) for the first `times` calls matching `path`. */
  failures?: { path: RegExp; status: number; times: number }[];
  delayMs?: number;
}

export interface StepService {
  name: string;
  server: Server;
  behaviour: StepBehaviour;
  /** Effects applied, by Idempotency-Key. */
  effects: Map<string, number>;
  stop: () => Promise<void>;
}

export const calls: CallRecord[] = [];

export async function startStepService(name: string, consul: ConsulClient): Promise<StepService> {
  const effects = new Map<string, number>();
  const answers = new Map<string, string>();
  const service: StepService = {
    name,
    server: createServer(),
    behaviour: {},
    effects,
    stop: async () => undefined,
  };
  let counter = 0;
  service.server.on('request', (req, res) => {
    if (req.url === '/healthz') return res.end('ok');
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      const key = String(req.headers['idempotency-key'] ?? '');
      calls.push({ service: name, method: req.method ?? '', path: req.url ?? '', key, at: Date.now() });
      setTimeout(() => {
        const failure = service.behaviour.failures?.find((f) => f.path.test(req.url ?? '') && f.times > 0);
        if (failure) {
          failure.times--;
          res.writeHead(failure.status, { 'content-type': 'application/json' });
          return res.end(JSON.stringify({ error: `${name} refuses ${req.url}` }));
        }
        const previous = answers.get(key);
        if (previous === undefined) {
          effects.set(key, (effects.get(key) ?? 0) + 1);
          const n = ++counter;
          answers.set(
            key,
            JSON.stringify({
              service: name,
              received: body ? (JSON.parse(body) as unknown) : null,
              validationId: `v-${n}`,
              recordId: `r-${n}`,
              sha256: `sha-${n}`,
              anchorId: `a-${n}`,
              importId: `i-${n}`,
              sessions: [{ id: `s-${n}` }],
              checksum: `c-${n}`,
            }),
          );
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(answers.get(key));
      }, service.behaviour.delayMs ?? 0);
    });
  });
  await new Promise<void>((resolve) => service.server.listen(0, '127.0.0.1', resolve));
  const port = (service.server.address() as AddressInfo).port;
  const registration = await registerTestService(consul, name, port);
  service.stop = async () => {
    await registration.deregister().catch(() => undefined);
    service.server.closeAllConnections();
    await new Promise((resolve) => service.server.close(resolve));
  };
  return service;
}

/**
 * Registers one instance of `name` on 127.0.0.1:`port` in Consul (instance id `<name>-1`),
 * with an HTTP check of /healthz every second, and keeps it registered.
 */
export async function registerTestService(
  consul: ConsulClient,
  name: string,
  port: number,
): Promise<ConsulRegistration> {
  const registration = new ConsulRegistration(consul, {
    serviceName: name,
    instanceId: `${name}-1`,
    address: '127.0.0.1',
    port,
    tags: [],
    meta: {},
    check: { kind: 'http', url: `http://127.0.0.1:${port}/healthz`, interval: '1s', timeout: '1s' },
    deregisterCriticalAfter: '1m',
  });
  await registration.keepRegistered(1000);
  return registration;
}
