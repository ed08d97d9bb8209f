/**
 * Leader election on a coordination.k8s.io Lease, as client-go does it: the holder renews
 * the lease; a candidate takes it over once it has not been renewed for its duration;
 * writes use the lease's resourceVersion, so two candidates cannot both win. On shutdown
 * the leader releases the lease so a standby takes over at once.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import { ApiError, type KubeClient } from '../kube/client.js';
import { LEASE } from '../kube/resources.js';
import type { Logger } from '../../lib/log/index.js';
import { leaseAction, microTime, type LeaseSpec } from './decision.js';

export { leaseAction, microTime, type LeaseAction, type LeaseSpec } from './decision.js';

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationSeconds?: number;
  retryPeriodMs?: number;
  /** A leader that could not renew for this long stops leading. */
  renewDeadlineMs?: number;
}

type Lease = KubernetesObject & {
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec?: LeaseSpec;
};

export class LeaderElector {
  private stopped = false;
  private leading = false;
  private lastRenew = 0;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly client: KubeClient,
    private readonly options: LeaderElectionOptions,
    private readonly log: Logger,
  ) {}

  /**
   * Campaigns until it leads, calls `onLead`, and keeps renewing; calls `onLost` if the
   * lease is lost, then campaigns again. Returns at once; the campaign runs in the background.
   */
  run(onLead: () => void, onLost: () => void): void {
    const tick = async () => {
      if (this.stopped) return;
      try {
        const won = await this.tryAcquireOrRenew();
        if (won) this.lastRenew = Date.now();
        if (won && !this.leading) {
          this.leading = true;
          this.log.info('became leader', { lease: this.options.name, identity: this.options.identity });
          onLead();
        }
      } catch (error) {
        this.log.warn('lease update failed', { error: String(error) });
      }
      if (this.leading && Date.now() - this.lastRenew > (this.options.renewDeadlineMs ?? 10_000)) {
        this.leading = false;
        this.log.error('lost the leader lease', { lease: this.options.name });
        onLost();
      }
      if (!this.stopped) this.timer = setTimeout(() => void tick(), this.options.retryPeriodMs ?? 2000);
    };
    void tick();
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** Stops campaigning and, if leading, hands the lease back. */
  async release(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (!this.leading) return;
    this.leading = false;
    const lease = await this.client.get<Lease>(LEASE, this.options.namespace, this.options.name);
    if (lease?.spec?.holderIdentity !== this.options.identity) return;
    await this.client
      .replace(LEASE, { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1 } })
      .catch((error: unknown) => this.log.warn('could not release the lease', { error: String(error) }));
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name, identity } = this.options;
    const duration = this.options.leaseDurationSeconds ?? 15;
    const lease = await this.client.get<Lease>(LEASE, namespace, name);
    const now = Date.now();
    const action = leaseAction(lease?.spec, identity, now);
    if (action === 'wait') return false;
    const spec: LeaseSpec = {
      holderIdentity: identity,
      leaseDurationSeconds: duration,
      renewTime: microTime(now),
      acquireTime: action === 'renew' ? lease?.spec?.acquireTime : microTime(now),
      leaseTransitions: (lease?.spec?.leaseTransitions ?? 0) + (action === 'take-over' ? 1 : 0),
    };
    try {
      if (action === 'create') {
        await this.client.create(LEASE, {
          apiVersion: LEASE.apiVersion,
          kind: LEASE.kind,
          metadata: { name, namespace },
          spec,
        });
      } else {
        await this.client.replace(LEASE, { ...(lease as Lease), spec });
      }
      return true;
    } catch (error) {
      // Another candidate wrote first (409 Conflict or 409 AlreadyExists): not ours this round.
      if (error instanceof ApiError && error.status === 409) return false;
      throw error;
    }
  }
}
