import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { createTcpProxy } from '../../../test/helpers/tcp-proxy.ts';
import { createRedis, type Redis } from '../redis.ts';
import { createMemoryInvalidationBus, createRedisInvalidationBus, type InvalidationBus } from './invalidation-bus.ts';

const redisUrl = process.env.TEST_REDIS_URL;

function collect(bus: InvalidationBus, topic: string) {
  const got: string[] = [];
  let resets = 0;
  bus.subscribe(topic, { onKeys: (k) => got.push(...k), onReset: () => void resets++ });
  return { got, resets: () => resets };
}

async function until(cond: () => boolean, ms = 3_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  expect(cond()).toBe(true);
}

describe('in-process invalidation bus', () => {
  it('delivers to every subscriber of the topic, synchronously', async () => {
    const bus = createMemoryInvalidationBus();
    const a = collect(bus, 'x');
    const other = collect(bus, 'y');
    expect(await bus.publish('x', ['1', '2'])).toBe(true);
    expect(a.got).toEqual(['1', '2']);
    expect(other.got).toEqual([]);
    expect(bus.live()).toBe(true);
  });
});

describe.skipIf(!redisUrl)('Redis invalidation bus', () => {
  const prefix = `plinth-test:${randomBytes(4).toString('hex')}:`;
  const closers: Array<() => Promise<void> | void> = [];
  afterAll(async () => {
    for (const c of closers.reverse()) await c();
  });
  const redis = (url = redisUrl!): Redis => {
    const r = createRedis(url);
    closers.push(() => r.disconnect());
    return r;
  };
  const bus = (r: Redis, extra: Partial<Parameters<typeof createRedisInvalidationBus>[0]> = {}) => {
    const b = createRedisInvalidationBus({ redis: r, prefix, retryForMs: 5_000, minBackoffMs: 20, maxBackoffMs: 200, ...extra });
    closers.push(() => b.close());
    return b;
  };

  it('carries invalidations between processes, and not to another prefix', async () => {
    const a = bus(redis());
    const b = bus(redis());
    const elsewhere = createRedisInvalidationBus({ redis: redis(), prefix: `${prefix}other:`, retryForMs: 1_000 });
    closers.push(() => elsewhere.close());
    await Promise.all([a.ready(), b.ready(), elsewhere.ready()]);
    const onB = collect(b, 'sessions');
    const onElsewhere = collect(elsewhere, 'sessions');
    expect(await a.publish('sessions', ['h1'])).toBe(true);
    await until(() => onB.got.includes('h1'));
    expect(onElsewhere.got).toEqual([]);
  });

  it('a subscriber that cannot reach Redis at start keeps retrying, and resets its caches once subscribed', async () => {
    const proxy = await createTcpProxy(redisUrl!);
    closers.push(() => proxy.close());
    proxy.cut();
    const b = bus(redis(`redis://127.0.0.1:${proxy.port}`));
    const onB = collect(b, 'sessions');
    await new Promise((r) => setTimeout(r, 150)); // several failed attempts
    expect(b.live()).toBe(false);
    proxy.heal();
    await b.ready(3_000);
    expect(onB.resets()).toBeGreaterThanOrEqual(1);
    const a = bus(redis());
    await a.ready();
    await a.publish('sessions', ['after-start']);
    await until(() => onB.got.includes('after-start'));

    // Redis goes away: deaf at once; back: subscribed again, caches reset, messages flow.
    const resetsBefore = onB.resets();
    proxy.cut();
    await until(() => !b.live());
    expect(onB.resets()).toBeGreaterThan(resetsBefore);
    proxy.heal();
    await b.ready(3_000);
    await a.publish('sessions', ['after-restart']);
    await until(() => onB.got.includes('after-restart'));
  });

  it('a publish that cannot reach Redis is retried until it lands (within retryForMs)', async () => {
    const proxy = await createTcpProxy(redisUrl!);
    closers.push(() => proxy.close());
    proxy.cut();
    const b = bus(redis());
    await b.ready();
    const onB = collect(b, 'memberships');
    const a = bus(redis(`redis://127.0.0.1:${proxy.port}`)); // the publisher is cut off from Redis
    const local = collect(a, 'memberships');
    expect(await a.publish('memberships', ['org:user'])).toBe(false);
    expect(local.got).toEqual(['org:user']); // its own process dropped the key at once
    proxy.heal();
    await until(() => onB.got.includes('org:user'));
  });
});
