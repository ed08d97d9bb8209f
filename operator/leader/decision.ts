/** What a candidate should do with the lease it just read. Pure. */
export type LeaseAction = 'create' | 'renew' | 'take-over' | 'wait';

export interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  renewTime?: string;
  acquireTime?: string;
  leaseTransitions?: number;
}

export function leaseAction(lease: LeaseSpec | undefined, identity: string, nowMs: number): LeaseAction {
  if (!lease) return 'create';
  if (lease.holderIdentity === identity) return 'renew';
  if (!lease.holderIdentity) return 'take-over';
  const renewed = lease.renewTime ? Date.parse(lease.renewTime) : 0;
  const expires = renewed + (lease.leaseDurationSeconds ?? 15) * 1000;
  return nowMs > expires ? 'take-over' : 'wait';
}

/** Kubernetes MicroTime: RFC 3339 with microseconds. */
export function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}
