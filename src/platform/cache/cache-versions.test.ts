import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { createRedis, type Redis } from '../redis.ts';
import { createRedisPolicy } from '../resilience/policy.ts';
import { createCache, DELETED, type CacheProvider } from './cache.ts';

const redisUrl = process.env.TEST_REDIS_URL;

interface Row {
  id: string;
  version: number;
  title: string;
}

/** Two "processes" (caches with their own Redis connections and L1) over one Redis, as two API instances. */
describe.runIf(redisUrl)('versioned cache entries: a racing read never writes an old version back', () => {
  const prefix = `plinth-test:${randomBytes(4).toString('hex')}:`;
  const redises: Redis[] = [];
  const caches: CacheProvider[] = [];
  async function instance(): Promise<CacheProvider> {
    const redis = createRedis(redisUrl!);
    redises.push(redis);
    if (redis.status !== 'ready') await new Promise((r) => redis.once('ready', r));
    const cache = createCache({ redis, policy: createRedisPolicy(undefined, `redis-versions-${redises.length}`), prefix, l1TtlMs: 0 });
    caches.push(cache);
    return cache;
  }
  afterAll(async () => {
    for (const c of caches) await c.close();
    const keys = await redises[0]!.keys(`${prefix}*`);
    if (keys.length > 0) await redises[0]!.del(...keys);
    for (const r of redises) r.disconnect();
  });

  it('the read that loaded v1 before the update stores nothing after the v2 invalidation', async () => {
    const [a, b, c] = (await Promise.all([instance(), instance(), instance()])).map((p) => p.namespace<Row>('tasks', { ttlSec: 300, version: (r) => r.version }));
    const tenant = '00000000-0000-7000-8000-000000000001';
    let releaseLoad!: () => void;
    const loadGate = new Promise<void>((r) => (releaseLoad = r));
    // Instance B misses and reads the row (v1) from the database, slowly…
    const racing = b!.get(tenant, 'task-1', async () => {
      await loadGate;
      return { id: 'task-1', version: 1, title: 'old' };
    });
    // …meanwhile instance A commits v2 and invalidates.
    expect(await a!.invalidate(tenant, 'task-1', 2)).toBe(true);
    releaseLoad();
    expect((await racing).title).toBe('old'); // B's own request saw the row as it read it
    // Nobody is served v1 from the cache afterwards: the next read loads v2 and caches it.
    const fresh = await c!.get(tenant, 'task-1', async () => ({ id: 'task-1', version: 2, title: 'new' }));
    expect(fresh.title).toBe('new');
    const cached = await a!.get(tenant, 'task-1', async () => {
      throw new Error('v2 should be cached by now');
    });
    expect(cached).toEqual({ id: 'task-1', version: 2, title: 'new' });
  });

  it('a deleted value is not cached again by a read that raced the delete', async () => {
    const [a, b] = (await Promise.all([instance(), instance()])).map((p) => p.namespace<Row>('tasks', { ttlSec: 300, version: (r) => r.version }));
    const tenant = '00000000-0000-7000-8000-000000000002';
    let releaseLoad!: () => void;
    const loadGate = new Promise<void>((r) => (releaseLoad = r));
    const racing = b!.get(tenant, 'gone', async () => {
      await loadGate;
      return { id: 'gone', version: 7, title: 'still there when read' };
    });
    await a!.invalidate(tenant, 'gone', DELETED);
    releaseLoad();
    await racing;
    let loads = 0;
    await a!.get(tenant, 'gone', async () => {
      loads++;
      return { id: 'gone', version: 7, title: 'x' };
    });
    expect(loads).toBe(1); // a miss: the old row was never written back
  });
});
