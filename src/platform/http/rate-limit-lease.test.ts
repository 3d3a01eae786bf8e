import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createRedis } from '../redis.ts';
import { createLeasingRateLimitStore, leaseCap } from './rate-limit-lease.ts';
import { createMemoryRateLimitStore, createRedisRateLimitStore, type RateLimitCheck, type RateLimitStore } from './rate-limit-store.ts';

const redisUrl = process.env.TEST_REDIS_URL;

/** A shared store (one bucket map, as Redis is for every instance) that counts the calls reaching it. */
function countingShared(now: () => number) {
  const inner = createMemoryRateLimitStore({ now });
  const calls = { check: 0, cells: 0 };
  const store: RateLimitStore = {
    kind: 'redis',
    consume: (key, policy) => inner.consume(key, policy),
    peek: (key, policy) => inner.peek(key, policy),
    async check(checks: RateLimitCheck[]) {
      calls.check++;
      const out = await inner.check(checks);
      for (const d of out) calls.cells += d?.allowed ? (d.granted ?? 1) : 0;
      return out;
    },
  };
  return { store, calls, inner };
}

const consume = (store: RateLimitStore, key: string, policy: { quota: number; windowSec: number }) =>
  store.check([{ key, policy, mode: 'consume' }]).then((d) => d[0]!);

describe('rate-limit leases (local cells drawn from the shared bucket)', () => {
  it('a busy key asks the shared store once per lease, not once per request; every request is still counted', async () => {
    let now = 1_000_000;
    const shared = countingShared(() => now);
    const store = createLeasingRateLimitStore(shared.store, { leasePercent: 2, leaseMs: 1000, now: () => now });
    const policy = { quota: 60_000, windowSec: 60 }; // cap: 1,200 cells
    let allowed = 0;
    for (let i = 0; i < 2_000; i++) {
      if ((await consume(store, 'principal:p', policy)).allowed) allowed++;
      now += 0.1; // 10,000 requests/s
    }
    expect(allowed).toBe(2_000);
    expect(shared.calls.check).toBeLessThan(40);
    // Cells were taken from the shared bucket: what it counted covers every request served.
    expect(shared.calls.cells).toBeGreaterThanOrEqual(2_000);
    expect(shared.calls.cells).toBeLessThanOrEqual(2_000 + leaseCap(policy, 2));
  });

  it('a small quota (cap 1) and a slow client stay exact: every request reaches the shared store', async () => {
    let now = 1_000_000;
    const shared = countingShared(() => now);
    const store = createLeasingRateLimitStore(shared.store, { leasePercent: 2, leaseMs: 1000, now: () => now });
    const small = { quota: 5, windowSec: 60 };
    const results = [];
    for (let i = 0; i < 6; i++) results.push((await consume(store, 'k', small)).allowed);
    expect(results).toEqual([true, true, true, true, true, false]);
    expect(shared.calls.check).toBe(6);
    // A client far below its rate leases nothing beyond its own request: no cell is wasted.
    const big = { quota: 60_000, windowSec: 60 };
    const before = shared.calls.cells;
    for (let i = 0; i < 10; i++) {
      await consume(store, 'slow', big);
      now += 2_500;
    }
    expect(shared.calls.cells - before).toBe(10);
  });

  it('two instances on one bucket: at most quota + 2 × cap admitted in the window, at least quota − 2 × cap', async () => {
    let now = 1_000_000;
    const shared = countingShared(() => now);
    const a = createLeasingRateLimitStore(shared.store, { leasePercent: 5, leaseMs: 1000, now: () => now });
    const b = createLeasingRateLimitStore(shared.store, { leasePercent: 5, leaseMs: 1000, now: () => now });
    const policy = { quota: 1_000, windowSec: 60 };
    const cap = leaseCap(policy, 5);
    let admitted = 0;
    // 4,000 requests within 4 s of one 60 s window, alternating instances: far over the quota.
    for (let i = 0; i < 4_000; i++) {
      if ((await consume(i % 2 ? a : b, 'org:o', policy)).allowed) admitted++;
      now += 1;
    }
    expect(admitted).toBeLessThanOrEqual(policy.quota + 2 * cap);
    expect(admitted).toBeGreaterThanOrEqual(policy.quota - 2 * cap);
    expect(shared.calls.check).toBeLessThan(4_000);
  });

  it('a cached gate answer is reused for leaseMs; a failure counted here clears it; a refusing gate consumes nothing', async () => {
    let now = 1_000_000;
    const shared = countingShared(() => now);
    const store = createLeasingRateLimitStore(shared.store, { leasePercent: 2, leaseMs: 1000, now: () => now });
    const gate: RateLimitCheck = { key: 'authfail:ip:x', policy: { quota: 1, windowSec: 60 }, mode: 'gate' };
    const org: RateLimitCheck = { key: 'org:o', policy: { quota: 3, windowSec: 60 }, mode: 'consume' };
    expect((await store.check([org, gate])).map((d) => d?.allowed)).toEqual([true, true]);
    const calls = shared.calls.check;
    // The gate comes from memory now; the org (cap 1) still asks.
    await store.check([gate]);
    expect(shared.calls.check).toBe(calls);
    // Another instance spends the failure budget: seen here once the cached answer is older than leaseMs.
    await shared.inner.consume(gate.key, gate.policy);
    expect((await store.check([gate]))[0]!.allowed).toBe(true);
    now += 1_001;
    const before = await shared.inner.peek(org.key, org.policy);
    const refused = await store.check([org, gate]);
    expect(refused[1]!.allowed).toBe(false);
    expect(refused[0]).toBeUndefined();
    expect((await shared.inner.peek(org.key, org.policy)).remaining).toBe(before.remaining);
    // A failure counted on this instance is seen by its very next gate.
    now += 61_000;
    expect((await store.check([gate]))[0]!.allowed).toBe(true);
    await store.consume(gate.key, gate.policy);
    expect((await store.check([gate]))[0]!.allowed).toBe(false);
  });

  it.skipIf(!redisUrl)('redis: two instances share one quota within the stated bound, with far fewer round trips', async () => {
    const prefix = `plinth-test:${randomBytes(4).toString('hex')}:`;
    const r1 = createRedis(redisUrl!);
    const r2 = createRedis(redisUrl!);
    await Promise.all([r1, r2].map((r) => new Promise((resolve) => r.once('ready', resolve))));
    const sent = [0, 0];
    [r1, r2].forEach((r, i) => {
      const send = r.sendCommand.bind(r);
      r.sendCommand = ((cmd: never) => (sent[i]!++, send(cmd))) as never;
    });
    try {
      const stores = [r1, r2].map((r) => createLeasingRateLimitStore(createRedisRateLimitStore(r, prefix), { leasePercent: 2, leaseMs: 1000 }));
      // 10 concurrent clients per instance, 300 requests each.
      async function run(key: string, policy: { quota: number; windowSec: number }) {
        let admitted = 0;
        await Promise.all(
          Array.from({ length: 20 }, async (_, c) => {
            for (let i = 0; i < 300; i++) if ((await consume(stores[c % 2]!, key, policy)).allowed) admitted++;
          }),
        );
        return admitted;
      }
      // Within the quota: every request admitted, in a fraction of the round trips.
      expect(await run('org:roomy', { quota: 100_000, windowSec: 60 })).toBe(6_000);
      expect(sent[0]! + sent[1]!).toBeLessThan(6_000 / 5);
      // Three times over the quota: admitted within the stated bound (refusals each ask Redis).
      const policy = { quota: 2_000, windowSec: 60 };
      const cap = leaseCap(policy, 2);
      const admitted = await run('org:tight', policy);
      expect(admitted).toBeLessThanOrEqual(policy.quota + 2 * cap);
      expect(admitted).toBeGreaterThanOrEqual(policy.quota - 2 * cap);
    } finally {
      const keys = await r1.keys(`${prefix}*`);
      if (keys.length) await r1.del(...keys);
      r1.disconnect();
      r2.disconnect();
    }
  });
});
