/**
 * Registers the local app in Consul while the sidecar runs: pod IP, port, tags, meta, and
 * either an HTTP/gRPC check Consul runs against the app or a TTL check the sidecar keeps
 * alive. Deregisters on stop so peers stop sending traffic before the pod goes away.
 */
import { durationMs } from '../../api/index.js';
import { createLogger, type Logger } from '../../lib/log/index.js';
import type { ConsulClient } from './consul-client.js';

export interface RegistrationOptions {
  serviceName: string;
  /** Unique per replica: <service>-<pod name> in a cluster. */
  instanceId: string;
  address: string;
  port: number;
  tags: string[];
  meta: Record<string, string>;
  check:
    | { kind: 'http'; url: string; interval: string; timeout: string }
    | { kind: 'grpc'; target: string; interval: string; timeout: string }
    /** The sidecar reports health itself (for apps Consul cannot reach). */
    | { kind: 'ttl'; ttl: string; isHealthy: () => Promise<boolean> };
  deregisterCriticalAfter: string;
  /** Where failures of the background re-registration and heartbeats are reported. */
  log?: Logger;
}

export class ConsulRegistration {
  private heartbeat?: NodeJS.Timeout;
  private antiEntropy?: NodeJS.Timeout;
  private readonly log: Logger;
  /** Background failures are logged when they start, not every few seconds while they last. */
  private failing = new Set<string>();

  constructor(
    private readonly client: ConsulClient,
    private readonly options: RegistrationOptions,
  ) {
    this.log = (options.log ?? createLogger('consul-registration')).child({ instance: options.instanceId });
  }

  get checkId(): string {
    return `service:${this.options.instanceId}`;
  }

  async register(): Promise<void> {
    const { serviceName, instanceId, address, port, tags, meta, check, deregisterCriticalAfter } =
      this.options;
    await this.client.register({
      ID: instanceId,
      Name: serviceName,
      Address: address,
      Port: port,
      Tags: tags,
      Meta: meta,
      Check:
        check.kind === 'http'
          ? {
              HTTP: check.url,
              Interval: check.interval,
              Timeout: check.timeout,
              DeregisterCriticalServiceAfter: deregisterCriticalAfter,
            }
          : check.kind === 'grpc'
            ? {
                GRPC: check.target,
                Interval: check.interval,
                Timeout: check.timeout,
                DeregisterCriticalServiceAfter: deregisterCriticalAfter,
              }
            : { TTL: check.ttl, DeregisterCriticalServiceAfter: deregisterCriticalAfter },
    });
    if (check.kind === 'ttl' && !this.heartbeat) this.startHeartbeat(check.ttl, check.isHealthy);
  }

  /**
   * Registers, then re-registers whenever the agent has lost the registration (an agent
   * restarted without its data dir forgets local services), until `deregister`.
   */
  async keepRegistered(checkEveryMs = 5000): Promise<void> {
    clearInterval(this.antiEntropy);
    this.antiEntropy = setInterval(() => {
      void this.client
        .hasService(this.options.instanceId)
        .then((present) => (present ? undefined : this.register()))
        .then(
          () => this.recovered('re-registration'),
          (error: unknown) => this.failed('re-registration', error),
        );
    }, checkEveryMs);
    this.antiEntropy.unref();
    await this.register();
  }

  async deregister(): Promise<void> {
    clearInterval(this.heartbeat);
    clearInterval(this.antiEntropy);
    this.heartbeat = undefined;
    this.antiEntropy = undefined;
    await this.client.deregister(this.options.instanceId);
  }

  private failed(task: string, error: unknown): void {
    if (this.failing.has(task)) return;
    this.failing.add(task);
    this.log.warn(`Consul ${task} failed; retrying`, { error });
  }

  private recovered(task: string): void {
    if (this.failing.delete(task)) this.log.info(`Consul ${task} works again`);
  }

  private startHeartbeat(ttl: string, isHealthy: () => Promise<boolean>): void {
    const beat = async () => {
      const healthy = await isHealthy().catch((error: unknown) => {
        this.log.warn('health probe of the app failed; reporting it critical', { error });
        return false;
      });
      await this.client
        .updateTtl(this.checkId, healthy ? 'passing' : 'critical', healthy ? 'app healthy' : 'app unhealthy')
        .then(
          () => this.recovered('TTL heartbeat'),
          (error: unknown) => this.failed('TTL heartbeat', error),
        );
    };
    // Three beats per TTL, so one lost update does not fail the check.
    this.heartbeat = setInterval(() => void beat(), Math.max(1000, durationMs(ttl) / 3));
    this.heartbeat.unref();
    void beat();
  }
}
