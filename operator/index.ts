/**
 * `aimesh operator`: the controller process. It serves probes and metrics at once,
 * campaigns for the leader lease (unless told not to), and runs the controllers only
 * while it leads. SIGTERM stops the work, releases the lease and exits.
 */
import { hostname } from 'node:os';
import { KubeClient } from './kube/client.js';
import { loadKubeCredentials } from './kube/config.js';
import { LeaderElector } from './leader/index.js';
import { Manager } from './manager.js';
import { createLogger } from '../lib/log/index.js';
import { operatorMetrics } from './metrics.js';
import { startProbeServer } from '../lib/probe/index.js';
import { DEFAULT_SIDECAR_IMAGE, type ConsulDefaults } from '../render/index.js';
import { startAdmission, type RunningAdmission } from './admission/index.js';

export interface OperatorOptions {
  kubeconfig?: string;
  namespace?: string;
  probeHost: string;
  probePort: number;
  leaderElection: boolean;
  leaseNamespace: string;
  leaseName: string;
  identity?: string;
  workers: number;
  sidecarImage?: string;
  /** The cluster's Consul (address, datacenter, token and CA Secrets), for every sidecar. */
  consul?: ConsulDefaults;
  /** The admission server (injection webhook); off when undefined. */
  webhook?: WebhookOptions;
}

export interface WebhookOptions {
  host: string;
  port: number;
  /** Secret (in leaseNamespace, the operator's own) that holds the CA and serving certificate. */
  secretName: string;
  /** The MutatingWebhookConfiguration whose caBundle the operator keeps. */
  configurationName: string;
  /** DNS names and IPs the API server reaches the webhook by: they go into the certificate. */
  hosts: string[];
  /** false when cert-manager issues the certificate and injects the caBundle. */
  manageCertificates: boolean;
  certCheckIntervalMs: number;
  /** How often the leader looks for pods that should have the sidecar and do not. */
  missScanIntervalMs: number;
}

export interface RunningOperator {
  probePort: number;
  stop: () => Promise<void>;
}

export async function runOperator(options: OperatorOptions): Promise<RunningOperator> {
  const log = createLogger('operator');
  const metrics = operatorMetrics();
  const credentials = await loadKubeCredentials(options.kubeconfig ? { kubeconfig: options.kubeconfig } : {});
  log.info('API server', { server: credentials.server, credentials: credentials.source });
  const client = new KubeClient(credentials, {
    onWrite: (verb, kind) => metrics.apiWrites.inc({ verb, kind }),
  });
  const newController = () =>
    new Manager({
      client,
      log,
      metrics,
      namespace: options.namespace,
      workers: options.workers,
      render: {
        ...(options.sidecarImage ? { sidecarImage: options.sidecarImage } : {}),
        ...(options.consul ? { consul: options.consul } : {}),
      },
      ...(options.webhook
        ? {
            missDetection: {
              excluded: [options.leaseNamespace],
              sidecarImage: options.sidecarImage ?? DEFAULT_SIDECAR_IMAGE,
              intervalMs: options.webhook.missScanIntervalMs,
            },
          }
        : {}),
    });

  // One controller per leadership term, with fresh caches: a replica that lost the lease
  // and wins it again must not act on what it saw before.
  let controller: Manager | undefined;
  let synced = false;
  const startController = () => {
    const current = newController();
    controller = current;
    synced = false;
    current
      .start()
      .then(() => {
        if (controller !== current) return;
        synced = true;
        log.info('controller started', { namespace: options.namespace ?? 'all' });
      })
      .catch((error: unknown) => {
        log.error('controller could not start', { error: String(error) });
        process.exitCode = 1;
        void stop();
      });
  };
  const stopController = async () => {
    const current = controller;
    controller = undefined;
    synced = false;
    await current?.stop();
  };

  const identity = options.identity ?? `${hostname()}-${process.pid}`;
  const elector = options.leaderElection
    ? new LeaderElector(client, { namespace: options.leaseNamespace, name: options.leaseName, identity }, log)
    : undefined;
  const probes = await startProbeServer({
    host: options.probeHost,
    port: options.probePort,
    registry: metrics.registry,
    ready: () => {
      // The webhook Service sends the API server only to replicas that can answer it.
      if (options.webhook && !admission) return { ready: false, reason: 'starting the admission server' };
      if (synced) return { ready: true, reason: 'caches synced' };
      if (elector !== undefined && !elector.isLeader)
        return { ready: true, reason: 'standing by for the lease' };
      return { ready: false, reason: 'filling caches' };
    },
  });
  log.info('operator listening', {
    probePort: probes.port,
    identity,
    leaderElection: options.leaderElection,
  });

  let admission: RunningAdmission | undefined;
  if (options.webhook) {
    const webhook = options.webhook;
    startAdmission({
      client,
      log: log.child({ component: 'admission' }),
      registry: metrics.registry,
      host: webhook.host,
      port: webhook.port,
      sidecarImage: options.sidecarImage ?? DEFAULT_SIDECAR_IMAGE,
      ...(options.consul ? { consul: options.consul } : {}),
      watchNamespace: options.namespace,
      certificates: {
        namespace: options.leaseNamespace,
        secretName: webhook.secretName,
        webhookConfiguration: webhook.configurationName,
        names: webhook.hosts,
        manage: webhook.manageCertificates,
        checkIntervalMs: webhook.certCheckIntervalMs,
      },
    })
      .then((running) => (admission = running))
      .catch((error: unknown) => {
        log.error('admission server could not start', { error: String(error) });
        process.exitCode = 1;
        void stop();
      });
  }

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      log.info('shutting down');
      await stopController();
      await admission?.stop();
      await elector?.release();
      metrics.isLeader.set(0);
      await probes.close();
      log.flush();
    })());

  if (elector) {
    elector.run(
      () => {
        metrics.isLeader.set(1);
        startController();
      },
      () => {
        // A leader that could not renew may race a new one: stop reconciling at once (as
        // controller-runtime does), but keep campaigning instead of exiting, so an API
        // server outage that nobody else could use does not leave the cluster unmanaged.
        metrics.isLeader.set(0);
        log.warn('stopped reconciling; campaigning for the lease again');
        void stopController();
      },
    );
  } else {
    startController();
  }
  return { probePort: probes.port, stop };
}
