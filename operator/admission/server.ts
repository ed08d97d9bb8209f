/**
 * The admission server: the one HTTPS listener where all of aimesh's webhooks live, one
 * route per webhook (`/mutate/inject` now; validating webhooks for AiService and Saga join
 * as routes of their own). Its certificate can be swapped while it runs, so rotation
 * needs no restart.
 */
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Counter, Histogram, type Registry } from 'prom-client';
import { describe } from '../../lib/errors/index.js';
import type { Logger } from '../../lib/log/index.js';
import type { KeyPair } from '../certs/pki.js';
import { admissionResponse, type AdmissionReview, type Webhook } from './review.js';

export interface AdmissionServerOptions {
  host: string;
  port: number;
  /** Webhooks by path. */
  webhooks: Record<string, Webhook>;
  certificate: KeyPair;
  log: Logger;
  registry: Registry;
}

export interface AdmissionServer {
  port: number;
  /** Serves this certificate to every new connection from now on. */
  setCertificate: (pair: KeyPair) => void;
  close: () => Promise<void>;
}

/** The API server sends at most ~3 MiB objects; anything larger is not a review. */
const MAX_BODY_BYTES = 4 * 1024 * 1024;

export async function startAdmissionServer(options: AdmissionServerOptions): Promise<AdmissionServer> {
  const metrics = admissionMetrics(options.registry);
  const server: Server = createServer(
    { key: options.certificate.key, cert: options.certificate.cert, minVersion: 'TLSv1.2' },
    (req, res) => serve(options, metrics, req, res),
  );
  // The API server waits at most the webhook timeout (a few seconds); nothing should take longer.
  server.headersTimeout = 10_000;
  server.requestTimeout = 15_000;
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : options.port,
    setCertificate: (pair) =>
      server.setSecureContext({ key: pair.key, cert: pair.cert, minVersion: 'TLSv1.2' }),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

interface AdmissionMetrics {
  duration: Histogram<'webhook'>;
  reviews: Counter<'webhook' | 'outcome'>;
}

function admissionMetrics(registry: Registry): AdmissionMetrics {
  return {
    duration: new Histogram({
      name: 'aimesh_operator_admission_duration_seconds',
      help: 'Time the webhook itself takes per review (parse, decide, answer), by webhook.',
      labelNames: ['webhook'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1],
      registers: [registry],
    }),
    reviews: new Counter({
      name: 'aimesh_operator_admission_reviews_total',
      help: 'Admission reviews by webhook and outcome (injected, skipped, refused: bad configuration, ignored, error).',
      labelNames: ['webhook', 'outcome'],
      registers: [registry],
    }),
  };
}

function serve(
  options: AdmissionServerOptions,
  metrics: AdmissionMetrics,
  req: IncomingMessage,
  res: ServerResponse,
): void {
  const path = (req.url ?? '/').split('?')[0] ?? '/';
  const webhook = options.webhooks[path];
  if (!webhook)
    return reply(res, 404, {
      error: `no webhook at ${path}; webhooks: ${Object.keys(options.webhooks).join(', ')}`,
    });
  if (req.method !== 'POST') return reply(res, 405, { error: 'webhooks take POST of an AdmissionReview' });
  const chunks: Buffer[] = [];
  let size = 0;
  req.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      reply(res, 413, { error: `an AdmissionReview must be under ${MAX_BODY_BYTES} bytes` });
      req.destroy();
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => {
    if (res.headersSent) return;
    const started = process.hrtime.bigint();
    const name = path.split('/').pop() ?? path;
    let review: AdmissionReview;
    try {
      review = JSON.parse(Buffer.concat(chunks).toString('utf8')) as AdmissionReview;
    } catch (error) {
      return reply(res, 400, { error: `the body is not JSON: ${describe(error)}` });
    }
    const request = review.request;
    if (review.apiVersion !== 'admission.k8s.io/v1' || !request?.uid)
      return reply(res, 400, { error: 'expected an admission.k8s.io/v1 AdmissionReview with request.uid' });
    try {
      const verdict = webhook(request);
      reply(res, 200, admissionResponse(request.uid, verdict));
      metrics.reviews.inc({ webhook: name, outcome: verdict.outcome });
      if (verdict.outcome === 'refused')
        options.log.info('admission refused to change the object', {
          webhook: name,
          namespace: request.namespace,
          warnings: verdict.warnings,
        });
    } catch (error) {
      // A failure of ours is an error to the API server, which then applies the webhook's
      // failurePolicy: the choice between blocking and admitting stays the user's.
      metrics.reviews.inc({ webhook: name, outcome: 'error' });
      options.log.error('webhook failed', { webhook: name, error });
      reply(res, 500, { error: `aimesh ${name} webhook failed: ${describe(error)}` });
    } finally {
      metrics.duration.observe({ webhook: name }, Number(process.hrtime.bigint() - started) / 1e9);
    }
  });
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return;
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}
