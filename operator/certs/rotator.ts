/**
 * Keeps the admission server's certificate good, on every replica: reads the Secret,
 * renews what certificateAction says is due (only when the operator manages the
 * certificates; with cert-manager it only reads), keeps the webhook configuration's
 * caBundle equal to the CAs in the Secret, and hands a changed serving certificate to the
 * server. Replicas race safely: a Secret write carries its resourceVersion, so one wins
 * and the others read what it wrote on their next look.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import { X509Certificate } from 'node:crypto';
import { Gauge, type Registry } from 'prom-client';
import { AimeshError, describe } from '../../lib/errors/index.js';
import type { Logger } from '../../lib/log/index.js';
import { ApiError, type KubeClient } from '../kube/client.js';
import {
  MUTATING_WEBHOOK_CONFIGURATION,
  SECRET,
  VALIDATING_WEBHOOK_CONFIGURATION,
} from '../kube/resources.js';
import {
  DEFAULT_LIFETIMES,
  certificateAction,
  createCa,
  issueServing,
  storedState,
  type CertificateBundle,
  type KeyPair,
  type Lifetimes,
} from './pki.js';

export interface CertRotatorOptions {
  client: Pick<KubeClient, 'get' | 'replace'>;
  log: Logger;
  registry: Registry;
  namespace: string;
  secretName: string;
  /** The webhook configuration whose caBundle this keeps; none when cert-manager injects it. */
  webhookConfiguration?: string;
  /** DNS names and IP addresses the API server dials the admission server by. */
  names: string[];
  /** false: cert-manager (or a person) writes the Secret, and the operator only serves it. */
  manage: boolean;
  checkIntervalMs: number;
  lifetimes?: Lifetimes;
  /** Called with the serving certificate whenever it differs from the last one. */
  onServing: (pair: KeyPair) => void;
}

type Secret = KubernetesObject & { data?: Record<string, string>; type?: string };
type WebhookConfiguration = KubernetesObject & {
  webhooks?: { name: string; clientConfig: { caBundle?: string } }[];
};

const KEYS = {
  caCert: 'ca.crt',
  caKey: 'ca.key',
  previousCa: 'ca-previous.crt',
  cert: 'tls.crt',
  key: 'tls.key',
};

export class CertRotator {
  private timer?: NodeJS.Timeout;
  private serving?: KeyPair;
  private stopped = false;
  private readonly expiry: Gauge;

  constructor(private readonly options: CertRotatorOptions) {
    this.expiry = new Gauge({
      name: 'aimesh_operator_webhook_certificate_expiry_timestamp_seconds',
      help: 'When the serving certificate of the admission server expires (alert well before).',
      registers: [options.registry],
    });
  }

  /** Looks once (and retries until a certificate is served), then keeps looking. */
  async start(): Promise<KeyPair> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.check();
        if (this.serving) break;
      } catch (error) {
        this.options.log.warn('webhook certificate not ready yet; retrying', { error: describe(error) });
      }
      if (this.stopped)
        throw new AimeshError('process.unavailable', 'stopped before a certificate was ready');
      await new Promise((resolve) => setTimeout(resolve, Math.min(500 * 2 ** attempt, 10_000)));
    }
    this.schedule();
    return this.serving;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.check()
        .catch((error: unknown) =>
          this.options.log.warn('webhook certificate check failed', { error: describe(error) }),
        )
        .finally(() => this.schedule());
    }, this.options.checkIntervalMs);
    this.timer.unref();
  }

  /** One look: renew if due, sync the caBundle, serve what the Secret holds. */
  async check(): Promise<void> {
    const { namespace, secretName } = this.options;
    let secret = await this.options.client.get<Secret>(SECRET, namespace, secretName);
    if (!secret)
      throw new AimeshError(
        'dependency.failed',
        `Secret ${namespace}/${secretName} does not exist; the chart creates it (or cert-manager does with certManager.enabled)`,
      );
    if (this.options.manage) secret = await this.renewIfDue(secret);
    const data = decode(secret.data);
    if (this.options.manage && this.options.webhookConfiguration)
      await this.syncCaBundle([data[KEYS.caCert], data[KEYS.previousCa]].filter(Boolean).join(''));
    const cert = data[KEYS.cert];
    const key = data[KEYS.key];
    if (!cert || !key)
      throw new AimeshError(
        'dependency.failed',
        `Secret ${namespace}/${secretName} has no ${KEYS.cert} and ${KEYS.key} yet`,
      );
    if (cert !== this.serving?.cert) {
      this.serving = { cert, key };
      this.options.onServing(this.serving);
      this.expiry.set(Date.parse(new X509Certificate(cert).validTo) / 1000);
      this.options.log.info('serving a new webhook certificate', { secret: `${namespace}/${secretName}` });
    }
  }

  private async renewIfDue(secret: Secret): Promise<Secret> {
    const data = decode(secret.data);
    const pair = (cert?: string, key?: string) => (cert && key ? { cert, key } : undefined);
    const stored: Partial<CertificateBundle> = {
      ca: pair(data[KEYS.caCert], data[KEYS.caKey]),
      serving: pair(data[KEYS.cert], data[KEYS.key]),
    };
    const now = Date.now();
    const decision = certificateAction(storedState(stored), this.options.names, now);
    if (decision.action === 'keep') return secret;
    const lifetimes = this.options.lifetimes ?? DEFAULT_LIFETIMES;
    const ca = decision.action === 'new-ca' ? await createCa(now, lifetimes) : (stored.ca as KeyPair);
    const serving = await issueServing(ca, this.options.names, now, lifetimes);
    const next: Record<string, string> = {
      [KEYS.caCert]: ca.cert,
      [KEYS.caKey]: ca.key,
      [KEYS.cert]: serving.cert,
      [KEYS.key]: serving.key,
    };
    // The old CA stays trusted until every replica serves a certificate of the new one.
    if (decision.action === 'new-ca' && stored.ca) next[KEYS.previousCa] = stored.ca.cert;
    try {
      const written = await this.options.client.replace<Secret>(SECRET, { ...secret, data: encode(next) });
      this.options.log.info('renewed the webhook certificate', {
        reason: decision.reason,
        action: decision.action,
      });
      return written;
    } catch (error) {
      // Another replica renewed first: use what it wrote.
      if (error instanceof ApiError && error.status === 409) {
        const current = await this.options.client.get<Secret>(
          SECRET,
          this.options.namespace,
          this.options.secretName,
        );
        if (current) return current;
      }
      throw error;
    }
  }

  /**
   * Both webhook configurations (mutating for injection, validating for AiService and
   * Saga) share one name; each present one gets the CA bundle. A chart may leave the
   * validating one out, so only a missing mutating one is worth a warning.
   */
  private async syncCaBundle(bundle: string): Promise<void> {
    const name = this.options.webhookConfiguration as string;
    const caBundle = Buffer.from(bundle).toString('base64');
    for (const type of [MUTATING_WEBHOOK_CONFIGURATION, VALIDATING_WEBHOOK_CONFIGURATION]) {
      const configuration = await this.options.client.get<WebhookConfiguration>(type, '', name);
      if (!configuration) {
        if (type === MUTATING_WEBHOOK_CONFIGURATION)
          this.options.log.warn('webhook configuration not found; the API server cannot call the webhook', {
            name,
          });
        continue;
      }
      const webhooks = configuration.webhooks ?? [];
      if (webhooks.every((w) => w.clientConfig.caBundle === caBundle)) continue;
      for (const webhook of webhooks) webhook.clientConfig.caBundle = caBundle;
      await this.options.client.replace(type, configuration);
      this.options.log.info('updated the caBundle of the webhook configuration', { kind: type.kind, name });
    }
  }
}

function decode(data: Record<string, string> | undefined): Record<string, string> {
  return Object.fromEntries(
    Object.entries(data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]),
  );
}

function encode(data: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')]));
}
