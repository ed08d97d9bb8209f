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
  /** Look for pods that should run the sidecar and do not, this often (off when undefined). */
  missDetection?: Omit<ScanOptions, 'namespace'> & { intervalMs: number };
}

export class Manager {
  private readonly watches: Watches;
  private readonly aiServices: Controller;
  private readonly sagas: Controller;
  private readonly misses?: MissDetector;
  private resyncTimer?: NodeJS.Timeout;
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
    );
    const events = new EventRecorder(client, log);
    const workers = options.workers ?? 2;
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
    await this.watches.start();
    // Stopped while the caches were filling (leadership lost): start nothing.
    if (this.stopped) return;
    this.started = true;
    this.enqueueAll();
    this.aiServices.start();
    this.sagas.start();
    this.misses?.start();
    this.resyncTimer = setInterval(() => this.enqueueAll(), this.options.resyncMs ?? 10 * 60_000);
    this.resyncTimer.unref();
  }

  /** Stops taking work, lets in-flight reconciles finish, stops the watches. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.started = false;
    clearInterval(this.resyncTimer);
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
