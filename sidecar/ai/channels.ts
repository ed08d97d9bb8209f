/**
 * Provider channel selection, One-API style: channels are tried by priority group (higher
 * first), in weighted-random order within a group; a disabled channel, one cooling down
 * after a 429 or 5xx, one the stack cannot use (its breaker is open), one over its
 * per-minute quota, or one that does not serve the requested model is skipped. Pure: time
 * and randomness are passed in.
 */

export interface Channel {
  name: string;
  priority: number;
  weight: number;
  enabled: boolean;
  models: readonly string[];
  requestsPerMinute?: number;
  tokensPerMinute?: number;
}

interface ChannelState {
  cooldownUntil: number;
  minute: number;
  requests: number;
  tokens: number;
}

export type SkipReason = 'disabled' | 'model' | 'cooldown' | 'breaker-open' | 'quota';

export class ChannelSelector {
  private readonly states = new Map<string, ChannelState>();

  constructor(
    private readonly channels: readonly Channel[],
    private readonly cooldownMs: number,
    private readonly random: () => number = Math.random,
  ) {}

  /**
   * The channels to try for one request, in order, and why the others were skipped.
   * `available` says whether the channel's stack may be used now (its breaker).
   */
  plan(
    model: string | undefined,
    nowMs: number,
    available: (name: string) => boolean = () => true,
  ): { order: Channel[]; skipped: Record<string, SkipReason> } {
    const skipped: Record<string, SkipReason> = {};
    const usable = this.channels.filter((channel) => {
      const reason = this.skipReason(channel, model, nowMs, available);
      if (reason) skipped[channel.name] = reason;
      return !reason;
    });
    const priorities = [...new Set(usable.map((c) => c.priority))].sort((a, b) => b - a);
    const order = priorities.flatMap((priority) =>
      this.weightedOrder(usable.filter((c) => c.priority === priority)),
    );
    return { order, skipped };
  }

  /** Counts a request against the channel's quota; false when it has none left. */
  reserve(name: string, nowMs: number): boolean {
    const channel = this.channels.find((c) => c.name === name);
    const state = this.stateOf(name, nowMs);
    if (!channel || this.overQuota(channel, state)) return false;
    state.requests++;
    return true;
  }

  succeeded(name: string, tokens: number, nowMs: number): void {
    const state = this.stateOf(name, nowMs);
    state.tokens += tokens;
  }

  /** A 429, 5xx or connection failure: the channel cools down (its breaker is the stack's). */
  failed(name: string, nowMs: number): void {
    this.stateOf(name, nowMs).cooldownUntil = nowMs + this.cooldownMs;
  }

  private skipReason(
    channel: Channel,
    model: string | undefined,
    nowMs: number,
    available: (name: string) => boolean,
  ): SkipReason | undefined {
    if (!channel.enabled) return 'disabled';
    if (model && channel.models.length > 0 && !channel.models.includes(model)) return 'model';
    const state = this.stateOf(channel.name, nowMs);
    if (nowMs < state.cooldownUntil) return 'cooldown';
    if (!available(channel.name)) return 'breaker-open';
    if (this.overQuota(channel, state)) return 'quota';
    return undefined;
  }

  private overQuota(channel: Channel, state: ChannelState): boolean {
    return (
      (channel.requestsPerMinute !== undefined && state.requests >= channel.requestsPerMinute) ||
      (channel.tokensPerMinute !== undefined && state.tokens >= channel.tokensPerMinute)
    );
  }

  private weightedOrder(group: Channel[]): Channel[] {
    const remaining = [...group];
    const order: Channel[] = [];
    while (remaining.length > 0) {
      const total = remaining.reduce((sum, c) => sum + c.weight, 0);
      let point = this.random() * total;
      const index = remaining.findIndex((c) => (point -= c.weight) < 0);
      order.push(...remaining.splice(index === -1 ? remaining.length - 1 : index, 1));
    }
    return order;
  }

  private stateOf(name: string, nowMs: number): ChannelState {
    const minute = Math.floor(nowMs / 60_000);
    let state = this.states.get(name);
    if (!state) {
      state = { cooldownUntil: 0, minute, requests: 0, tokens: 0 };
      this.states.set(name, state);
    }
    // Quotas are per minute: a new minute starts from zero.
    if (state.minute !== minute) {
      state.minute = minute;
      state.requests = 0;
      state.tokens = 0;
    }
    return state;
  }
}
