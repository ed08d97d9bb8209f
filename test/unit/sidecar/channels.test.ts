import { describe, expect, it } from '@jest/globals';
import { ChannelSelector, type Channel } from '../../../sidecar/ai/index.js';

const channel = (name: string, priority: number, extra: Partial<Channel> = {}): Channel => ({
  name,
  priority,
  weight: 1,
  enabled: true,
  models: [],
  ...extra,
});

describe('provider channel selection', () => {
  it('orders by priority group, then by weight within a group', () => {
    let seed = 0;
    const selector = new ChannelSelector(
      [channel('low', 1), channel('a', 10, { weight: 3 }), channel('b', 10, { weight: 1 })],
      30_000,
      () => (seed = (seed * 9301 + 49297) % 233280) / 233280,
    );
    let aFirst = 0;
    for (let i = 0; i < 4000; i++) {
      const { order } = selector.plan(undefined, 0);
      expect(order.map((c) => c.name).slice(2)).toEqual(['low']);
      if (order[0]?.name === 'a') aFirst++;
    }
    expect(aFirst / 4000).toBeGreaterThan(0.7);
    expect(aFirst / 4000).toBeLessThan(0.8);
  });

  it('skips disabled channels, channels without the model, cooling-down ones and ones over quota', () => {
    const selector = new ChannelSelector(
      [
        channel('off', 10, { enabled: false }),
        channel('gpt', 10, { models: ['gpt-4o'] }),
        channel('limited', 5, { requestsPerMinute: 1 }),
        channel('any', 1),
      ],
      2000,
    );
    expect(selector.plan('deepseek-chat', 0)).toEqual({
      order: [expect.objectContaining({ name: 'limited' }), expect.objectContaining({ name: 'any' })],
      skipped: { off: 'disabled', gpt: 'model' },
    });
    expect(selector.reserve('limited', 0)).toBe(true);
    expect(selector.plan(undefined, 1).skipped.limited).toBe('quota');
    // A new minute, a new quota.
    expect(selector.plan(undefined, 60_000).skipped.limited).toBeUndefined();
    selector.failed('gpt', 100);
    expect(selector.plan('gpt-4o', 1000).skipped.gpt).toBe('cooldown');
    expect(selector.plan('gpt-4o', 2100).skipped.gpt).toBeUndefined();
  });

  it('counts tokens against tokensPerMinute and skips a channel its stack cannot use (breaker open)', () => {
    const selector = new ChannelSelector([channel('t', 1, { tokensPerMinute: 100 }), channel('u', 1)], 0);
    selector.succeeded('t', 100, 0);
    expect(selector.plan(undefined, 1).skipped.t).toBe('quota');
    const open = new Set(['u']);
    expect(selector.plan(undefined, 60_000, (name) => !open.has(name))).toEqual({
      order: [expect.objectContaining({ name: 't' })],
      skipped: { u: 'breaker-open' },
    });
    open.clear();
    expect(selector.plan(undefined, 60_000, (name) => !open.has(name)).skipped).toEqual({});
  });
});
