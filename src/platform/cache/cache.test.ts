import { randomBytes } from 'node:crypto';
import { register } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedis, type Redis } from '../redis.ts';
import { createRedisPolicy } from '../resilience/policy.ts';
import { createCache, type CacheProvider } from './cache.ts';

const redisUrl = process.env.TEST_REDIS_URL;
const T1 = '0190a4c2-0000-7000-8000-000000000001';
const T2 = '0190a4c2-0000-7000-8000-000000000002';

async function counter(cache: string, result: string): Promise<number> {
  const metric = await register.getSingleMetric('plinth_cache_requests_total')?.get();
  return metric?.values.find((v) => v.labels.cache === cache && v.labels.result === result)?.value ?? 0;
}

async function ready(redis: Redis) {
  if (redis.status !== 'ready') await new Promise((r) => redis.once('ready', r));
}

describe(`cache-aside (${redisUrl ? 'L1 + redis' : 'L1 only'})`, () => {
  const prefix = `plinth-test:${randomBytes(4).toString('hex')}:`;
  const redises: Redis[] = [];
  let a: CacheProvider;
  let b: CacheProvider;

  function provider(l1TtlMs = 60_000): CacheProvider {
    const redis = redisUrl ? createRedis(redisUrl) : undefined;
    if (redis) redises.push(redis);
    return createCache({ redis, policy: createRedisPolicy(undefined, `redis-cache-test-${redises.length}`), prefix, l1TtlMs });
  }

  beforeAll(async () => {
    a = provider();
    b = provider(); // a second "process": its own L1, the same Redis
    await Promise.all(redises.map(ready));
    await new Promise((r) => setTimeout(r, 100)); // subscribers connected
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    if (redises[0]) {
      const keys = await redises[0].keys(`${prefix}*`);
      if (keys.length) await redises[0].del(...keys);
    }
    for (const r of redises) r.disconnect();
  });

  it('loads once, then hits; counts hits and misses; keys are tenant-scoped', async () => {
    const projects = a.namespace<{ name: string }>('projects', { ttlSec: 60 });
    let loads = 0;
    const loader = (name: string) => async () => {
      loads++;
      return { name };
    };
    const hits = await counter('projects', 'hit');
    const misses = await counter('projects', 'miss');
    expect(await projects.get(T1, 'p1', loader('tenant one'))).toEqual({ name: 'tenant one' });
    expect(await projects.get(T1, 'p1', loader('never'))).toEqual({ name: 'tenant one' });
    // Same key, other tenant: its own entry, never tenant one's value.
    expect(await projects.get(T2, 'p1', loader('tenant two'))).toEqual({ name: 'tenant two' });
    expect(loads).toBe(2);
    expect((await counter('projects', 'hit')) - hits).toBe(1);
    expect((await counter('projects', 'miss')) - misses).toBe(2);
    if (redises[0]) {
      expect(await redises[0].get(`${prefix}tenant:${T1}:projects:p1`)).toBe('{"name":"tenant one"}');
      expect(await redises[0].pttl(`${prefix}tenant:${T1}:projects:p1`)).toBeGreaterThan(50_000);
    }
  });

  it('single flight: 100 concurrent misses for one key run the loader once', async () => {
    const ns = a.namespace<number>('stampede', { ttlSec: 60 });
    let loads = 0;
    const loader = async () => {
      loads++;
      await new Promise((r) => setTimeout(r, 50));
      return 42;
    };
    const values = await Promise.all(Array.from({ length: 100 }, () => ns.get(T1, 'hot', loader)));
    expect(values.every((v) => v === 42)).toBe(true);
    expect(loads).toBe(1);
  });

  it('invalidate drops the entry here and in the other process', async () => {
    const nsA = a.namespace<string>('settings', { ttlSec: 60 });
    const nsB = b.namespace<string>('settings', { ttlSec: 60 });
    let version = 'v1';
    const loader = async () => version;
    expect(await nsA.get(T1, 'k', loader)).toBe('v1');
    expect(await nsB.get(T1, 'k', loader)).toBe('v1'); // B: from Redis (or its own load without Redis), now in B's L1
    version = 'v2';
    await nsA.invalidate(T1, 'k');
    expect(await nsA.get(T1, 'k', loader)).toBe('v2');
    if (redisUrl) {
      // B's L1 entry was dropped by the pub/sub message, not by waiting for the L1 TTL (60 s here).
      await new Promise((r) => setTimeout(r, 100));
      expect(await nsB.get(T1, 'k', async () => 'loaded by B')).toBe('v2');
    }
  });

  it('peek answers from this process\'s L1 only, synchronously: nothing before a get, the value after, nothing after an invalidation', async () => {
    const ns = a.namespace<{ n: number }>('peeked', { ttlSec: 60 });
    expect(ns.peek(T1, 'k')).toBeUndefined();
    await ns.get(T1, 'k', async () => ({ n: 1 }));
    expect(ns.peek(T1, 'k')).toEqual({ n: 1 });
    expect(ns.peek(T2, 'k')).toBeUndefined();
    // The other process has it in Redis at most, not in its L1: peek never reads Redis.
    expect(b.namespace<{ n: number }>('peeked', { ttlSec: 60 }).peek(T1, 'k')).toBeUndefined();
    await ns.invalidate(T1, 'k');
    expect(ns.peek(T1, 'k')).toBeUndefined();
  });

  it('a load that started before an invalidation does not store its stale value', async () => {
    const ns = a.namespace<string>('racy', { ttlSec: 60 });
    let release!: () => void;
    const slow = ns.get(T1, 'k', () => new Promise<string>((r) => (release = () => r('stale'))));
    await new Promise((r) => setTimeout(r, 20));
    await ns.invalidate(T1, 'k');
    release();
    expect(await slow).toBe('stale');
    expect(await ns.get(T1, 'k', async () => 'fresh')).toBe('fresh');
  });

  it('rejects cache names that could collide with the key layout', () => {
    expect(() => a.namespace('Bad:Name', { ttlSec: 1 })).toThrow(/must match/);
  });
});

describe('cache with Redis unreachable', () => {
  it('answers from the loader at once (breaker) and never throws', async () => {
    const redis = createRedis('redis://127.0.0.1:1');
    const policy = createRedisPolicy(undefined, 'redis-cache-down');
    const cache = createCache({ redis, policy, prefix: 'x:', l1TtlMs: 0 });
    try {
      const ns = cache.namespace<number>('down', { ttlSec: 60 });
      const started = Date.now();
      let loads = 0;
      for (let i = 0; i < 10; i++) expect(await ns.get(T1, 'k', async () => ++loads)).toBe(loads);
      expect(loads).toBe(10);
      expect(policy.breakerState()).toBe('open');
      expect(Date.now() - started).toBeLessThan(2_000);
      await ns.invalidate(T1, 'k'); // does not throw either
    } finally {
      await cache.close();
      redis.disconnect();
    }
  });
});
