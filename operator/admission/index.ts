/**
 * The admission side of the operator, on every replica (the API server may call any of
 * them through the webhook Service): the HTTPS admission server, the certificate it
 * serves, and the cache of AiServices the injection webhook reads. It runs whether or not
 * this replica leads: webhooks must answer even while a new leader is being elected.
 */
import type { Registry } from 'prom-client';
import { validateResource, type AiService } from '../../api/index.js';
import { describe } from '../../lib/errors/index.js';
import type { Logger } from '../../lib/log/index.js';
import { supportsNativeSidecars, type ConsulDefaults } from '../../render/index.js';
import type { KeyPair } from '../certs/pki.js';
import { CertRotator } from '../certs/rotator.js';
import type { KubeClient } from '../kube/client.js';
import { Informer } from '../kube/informer.js';
import { AI_SERVICE } from '../kube/resources.js';
import type { LiveObject } from '../watches.js';
import { INJECTION_PATH, injectionWebhook } from './injection.js';
import { VALIDATION_PATH, validationWebhook } from './validation.js';
import { startAdmissionServer } from './server.js';

export { INJECTION_PATH } from './injection.js';

export interface AdmissionOptions {
  client: KubeClient;
  log: Logger;
  registry: Registry;
  host: string;
  port: number;
  sidecarImage: string;
  consul?: ConsulDefaults;
  /** Watch one namespace only; all when undefined. */
  watchNamespace?: string;
  certificates: {
    /** Namespace of the Secret: the operator's own. */
    namespace: string;
    secretName: string;
    /** The MutatingWebhookConfiguration whose caBundle the operator keeps. */
    webhookConfiguration: string;
    /** DNS names and IPs in the serving certificate. */
    names: string[];
    /** false with cert-manager: it writes the Secret and injects the caBundle. */
    manage: boolean;
    checkIntervalMs: number;
  };
}

export interface RunningAdmission {
  port: number;
  stop: () => Promise<void>;
}

/** Resolves once the server listens with a certificate and the AiService cache is filled. */
export async function startAdmission(options: AdmissionOptions): Promise<RunningAdmission> {
  const { log } = options;
  const aiServices = new ValidAiServices(options.client, options.watchNamespace, log);
  const version = await options.client.serverVersion().catch((error: unknown) => {
    log.warn('could not read the Kubernetes version; assuming native sidecars (1.29+)', {
      error: describe(error),
    });
    return undefined;
  });
  const nativeSidecar = version ? supportsNativeSidecars(version) : true;

  // Certificates the rotator finds before the server listens are already what it starts with.
  const serve: { certificate?: (pair: KeyPair) => void } = {};
  const rotator = new CertRotator({
    client: options.client,
    log,
    registry: options.registry,
    ...options.certificates,
    onServing: (pair) => serve.certificate?.(pair),
  });
  const [certificate] = await Promise.all([rotator.start(), aiServices.start()]);
  const server = await startAdmissionServer({
    host: options.host,
    port: options.port,
    certificate,
    log,
    registry: options.registry,
    webhooks: {
      [INJECTION_PATH]: injectionWebhook({
        aiServicesIn: (namespace) => aiServices.in(namespace),
        sidecarImage: options.sidecarImage,
        nativeSidecar,
        ...(options.consul ? { consul: options.consul } : {}),
      }),
      [VALIDATION_PATH]: validationWebhook(),
    },
  });
  log.info('admission server listening', { port: server.port, kubernetes: version, nativeSidecar });
  serve.certificate = server.setCertificate;
  return {
    port: server.port,
    stop: async () => {
      rotator.stop();
      aiServices.stop();
      await server.close();
    },
  };
}

/**
 * AiServices as the webhook needs them: valid, by namespace, each validated once per
 * change rather than once per admitted pod.
 */
class ValidAiServices {
  private readonly informer: Informer<LiveObject>;
  private readonly validated = new Map<string, { version?: string; resource?: AiService }>();

  constructor(client: KubeClient, namespace: string | undefined, log: Logger) {
    this.informer = new Informer<LiveObject>(client, AI_SERVICE, () => undefined, {
      namespace,
      onError: (error) => log.warn('AiService watch failed; retrying', { error }),
    });
  }

  start(): Promise<void> {
    return this.informer.start();
  }

  stop(): void {
    this.informer.stop();
  }

  in(namespace: string): AiService[] {
    const all = this.informer.list();
    // Deleted AiServices leave entries behind; dropping them all now and then bounds the map.
    if (this.validated.size > 2 * all.length + 100) this.validated.clear();
    return all.flatMap((live) => {
      if (live.metadata.namespace !== namespace || live.metadata.deletionTimestamp) return [];
      const key = live.metadata.uid ?? `${namespace}/${live.metadata.name}`;
      let entry = this.validated.get(key);
      if (entry === undefined || entry.version !== live.metadata.resourceVersion) {
        const result = validateResource({ ...live, status: undefined });
        entry = {
          version: live.metadata.resourceVersion,
          ...(result.ok && result.resource.kind === 'AiService' ? { resource: result.resource } : {}),
        };
        this.validated.set(key, entry);
      }
      return entry?.resource ? [entry.resource] : [];
    });
  }
}
