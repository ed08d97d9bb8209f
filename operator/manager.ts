/**
 * One leadership term's worth of controllers: the watches, the AiService and Saga
 * controllers they feed, and a periodic resync. A replica that wins the lease builds a
 * fresh Manager, with fresh caches, so it never acts on what it saw in an earlier term.
 */
import type { Logger } from '../lib/log/index.js';
import type { RenderOptions } from '../render/index.js';
import { Controller } from './controller/controller.js';
import { EventRecorder } from './events.js';
import type { KubeClient } from './kube/client.js';
import { keyOfObject } from './kube/informer.js';
import { CHILD_TYPES, ISTIO_TYPES } from './kube/resources.js';
import type { OperatorMetrics } from './metrics.js';
import { MissDetector, type ScanOptions } from './admission/scan.js';
import { AiServiceReconciler } from './reconcilers/aiservice.js';
import { SagaReconciler } from './reconcilers/saga.js';
import { Watches } from './watches.js';

export interface ManagerOptions {
  client: KubeClient;
  log: Logger;
  metrics: OperatorMetrics;
  render?: RenderOptions;
  /** Watch one namespace only; all namespaces when undefined. */
  namespace?: string;
  workers?: number;
  /** Every AiService and Saga is reconciled again this often, as a safety net. */
  resyncMs?: number;
  /** How often to ask the API server whether Istio's kinds are served (they may come and go). */
  istioCheckMs?: number;
  /** Look for pods that should run the sidecar and do not, this often (off when undefined). */
  missDetection?: Omit<ScanOptions, 'namespace'> & { intervalMs: number };
}

export class Manager {
  private readonly watches: Watches;
  private readonly aiServices: Controller;
  private readonly sagas: Controller;
  private readonly misses?: MissDetector;
  private resyncTimer?: NodeJS.Timeout;
  private istioTimer?: NodeJS.Timeout;
  /** Whether the cluster serves every Istio kind the render writes. */
  private istio = false;
  private istioChecked = false;
  private started = false;
  private stopped = false;

  constructor(private readonly options: ManagerOptions) {
    const { client, log, metrics } = options;
    // Keys reach the controllers only once they run: before that the caches are filling
    // and start() enqueues everything once.
    this.watches = new Watches(
      { client, log, namespace: options.namespace },
      {
        aiService: (key) => this.started && this.aiServices.enqueue(key),
        saga: (key) => this.started && this.sagas.enqueue(key),
      },
      CHILD_TYPES.filter((t) => !ISTIO_TYPES.includes(t)),
    );
    const events = new EventRecorder(client, log);
    const workers = options.workers ?? 8;
    if (options.missDetection)
      this.misses = new MissDetector({
        ...options.missDetection,
        namespace: options.namespace,
        client,
        events,
        log,
        gauge: metrics.podsWithoutSidecar,
        onAdoptedChanged: (keys) => {
          if (this.started) for (const key of keys) this.aiServices.enqueue(key);
        },
      });
    const misses = this.misses;
    this.aiServices = new Controller(
      new AiServiceReconciler({
        client,
        caches: this.watches,
        events,
        log,
        render: options.render,
        facts: () => ({ istio: this.istio }),
        ...(misses ? { adoptedMisses: (key: string) => misses.missesOf(key) } : {}),
      }),
      { log, metrics, workers },
    );
    this.sagas = new Controller(new SagaReconciler({ client, caches: this.watches, events }), {
      log,
      metrics,
      workers: 1,
    });
  }

  /** Fills every cache, then starts the controllers; resolves once they run. */
  async start(): Promise<void> {
    await Promise.all([this.watches.start(), this.checkIstio()]);
    // Stopped while the caches were filling (leadership lost): start nothing.
    if (this.stopped) return;
    this.started = true;
    this.enqueueAll();
    this.aiServices.start();
    this.sagas.start();
    this.misses?.start();
    this.resyncTimer = setInterval(() => this.enqueueAll(), this.options.resyncMs ?? 10 * 60_000);
    this.resyncTimer.unref();
    this.istioTimer = setInterval(
      () =>
        void this.checkIstio().catch((error: unknown) =>
          this.options.log.warn('could not tell whether Istio is installed; keeping what was known', {
            error,
          }),
        ),
      this.options.istioCheckMs ?? 15_000,
    );
    this.istioTimer.unref();
  }

  /**
   * Istio is optional: its policies are rendered and its kinds watched only while the API
   * server serves all of them. A change either way reconciles every AiService, so policies
   * appear when Istio is installed and conditions say so when it is not, with no restart.
   */
  private async checkIstio(): Promise<void> {
    const missing = await this.options.client.unserved(ISTIO_TYPES);
    const installed = missing.length === 0;
    if (installed === this.istio && this.istioChecked) return;
    this.istioChecked = true;
    if (installed) await this.watches.watchKinds(ISTIO_TYPES);
    else this.watches.unwatchKinds(ISTIO_TYPES);
    this.istio = installed;
    this.options.log.info(
      installed ? 'Istio is installed: rendering its policies' : 'Istio is not installed: no Istio policies',
      {
        ...(installed ? {} : { missing: missing.map((t) => `${t.kind} (${t.apiVersion})`) }),
      },
    );
    if (this.started) this.enqueueAll();
  }

  /** Stops taking work, lets in-flight reconciles finish, stops the watches. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.started = false;
    clearInterval(this.resyncTimer);
    clearInterval(this.istioTimer);
    this.misses?.stop();
    await Promise.all([this.aiServices.stop(), this.sagas.stop()]);
    this.watches.stop();
  }

  get queueDepth(): number {
    return this.aiServices.depth + this.sagas.depth;
  }

  private enqueueAll(): void {
    for (const aiService of this.watches.aiServices.list()) this.aiServices.enqueue(keyOfObject(aiService));
    for (const saga of this.watches.sagas.list()) this.sagas.enqueue(keyOfObject(saga));
  }
}
