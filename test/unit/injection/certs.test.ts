import { describe, expect, it } from '@jest/globals';
import { request } from 'node:https';
import { Registry } from 'prom-client';
import { createLogger } from '../../../lib/log/index.js';
import { startAdmissionServer } from '../../../operator/admission/server.js';
import { CertRotator } from '../../../operator/certs/rotator.js';
import { INJECTION_PATH, injectionWebhook } from '../../../operator/admission/injection.js';
import {
  certificateAction,
  createCa,
  issueServing,
  storedState,
  type KeyPair,
} from '../../../operator/certs/pki.js';

const HOUR = 3_600_000;
const NAMES = ['aimesh-webhook.aimesh-system.svc', '127.0.0.1'];

describe('certificateAction', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  const ca = { notBefore: now - 10 * HOUR, notAfter: now + 1000 * HOUR };
  const serving = { notBefore: now - HOUR, notAfter: now + 90 * HOUR, names: NAMES, signedByCa: true };

  it('keeps good certificates and renews each one after two thirds of its life', () => {
    expect(certificateAction({ ca, serving }, NAMES, now)).toEqual({ action: 'keep' });
    expect(certificateAction({ ca, serving }, NAMES, now + 61 * HOUR).action).toBe('issue-serving');
    expect(certificateAction({ ca, serving }, NAMES, now + 700 * HOUR).action).toBe('new-ca');
  });

  it('replaces missing, expired, foreign or misnamed serving certificates at once', () => {
    expect(certificateAction({}, NAMES, now)).toEqual({ action: 'new-ca', reason: 'there is no CA yet' });
    expect(certificateAction({ ca }, NAMES, now).action).toBe('issue-serving');
    expect(certificateAction({ ca, serving: { ...serving, signedByCa: false } }, NAMES, now).action).toBe(
      'issue-serving',
    );
    expect(certificateAction({ ca, serving: { ...serving, notAfter: now - 1 } }, NAMES, now)).toEqual({
      action: 'issue-serving',
      reason: 'the serving certificate has expired',
    });
    expect(certificateAction({ ca, serving }, [...NAMES, 'other.svc'], now)).toEqual({
      action: 'issue-serving',
      reason: 'the serving certificate does not name other.svc',
    });
  });
});

describe('CA and serving certificate (@peculiar/x509)', () => {
  it('issues certificates that storedState reads back, and that a TLS client trusting the CA accepts', async () => {
    const now = Date.now();
    const ca = await createCa(now);
    const serving = await issueServing(ca, NAMES, now);
    const state = storedState({ ca, serving });
    expect(state.serving).toMatchObject({ names: NAMES, signedByCa: true });
    expect(certificateAction(state, NAMES, now)).toEqual({ action: 'keep' });
    const other = await createCa(now);
    expect(storedState({ ca: other, serving }).serving?.signedByCa).toBe(false);
    expect(storedState({ ca: { cert: 'garbage', key: 'x' } })).toEqual({});

    const server = await startAdmissionServer({
      host: '127.0.0.1',
      port: 0,
      certificate: serving,
      log: createLogger('test', { level: 'error' }),
      registry: new Registry(),
      webhooks: {
        [INJECTION_PATH]: injectionWebhook({
          aiServicesIn: () => [],
          sidecarImage: 'aimesh:test',
          nativeSidecar: true,
        }),
      },
    });
    try {
      const review = await post(server.port, ca, {
        apiVersion: 'admission.k8s.io/v1',
        kind: 'AdmissionReview',
        request: {
          uid: 'u-1',
          kind: { group: '', version: 'v1', kind: 'Pod' },
          operation: 'CREATE',
          namespace: 'shop',
          object: { metadata: { labels: { app: 'web' } }, spec: { containers: [{ name: 'web' }] } },
        },
      });
      expect(review.response).toMatchObject({ uid: 'u-1', allowed: true, patchType: 'JSONPatch' });
      const patch = JSON.parse(Buffer.from(review.response.patch, 'base64').toString()) as { path: string }[];
      expect(patch.map((op) => op.path)).toContain('/spec/initContainers');

      // Rotation: a certificate from a new CA is served to new connections without a restart.
      const nextCa = await createCa(now);
      server.setCertificate(await issueServing(nextCa, NAMES, now));
      await expect(post(server.port, ca, {})).rejects.toThrow();
      const bad = await post(server.port, nextCa, { apiVersion: 'admission.k8s.io/v1', request: {} }, 400);
      expect(bad.error).toMatch(/request.uid/);
    } finally {
      await server.close();
    }
  });
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function post(port: number, ca: KeyPair, body: unknown, status = 200): Promise<any> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path: INJECTION_PATH, method: 'POST', ca: ca.cert, agent: false },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () =>
          res.statusCode === status
            ? resolve(JSON.parse(text))
            : reject(new Error(`${res.statusCode}: ${text}`)),
        );
      },
    );
    req.once('error', reject);
    req.end(JSON.stringify(body));
  });
}

describe('CertRotator with cert-manager', () => {
  it('serves what cert-manager wrote and writes nothing itself', async () => {
    const now = Date.now();
    const ca = await createCa(now);
    const serving = await issueServing(ca, NAMES, now);
    const b64 = (text: string) => Buffer.from(text).toString('base64');
    const writes: unknown[] = [];
    const served: KeyPair[] = [];
    const rotator = new CertRotator({
      client: {
        get: (async (type: { kind: string }) =>
          type.kind === 'Secret'
            ? { metadata: { name: 's' }, data: { 'tls.crt': b64(serving.cert), 'tls.key': b64(serving.key) } }
            : undefined) as never,
        replace: (async (_type: unknown, object: unknown) => {
          writes.push(object);
          return object;
        }) as never,
      },
      log: createLogger('test', { level: 'error' }),
      registry: new Registry(),
      namespace: 'aimesh-system',
      secretName: 's',
      webhookConfiguration: 'w',
      names: NAMES,
      manage: false,
      checkIntervalMs: 60_000,
      onServing: (pair) => served.push(pair),
    });
    expect(await rotator.start()).toEqual(serving);
    rotator.stop();
    expect(served).toEqual([serving]);
    expect(writes).toEqual([]);
  });
});
