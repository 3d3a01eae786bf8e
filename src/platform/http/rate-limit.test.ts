import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEdgeTestApp, createWidgetTable, type WidgetControls } from '../../../test/helpers/edge-fixtures.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { newId } from '../ids.ts';
import { createRedis } from '../redis.ts';
import { createRedisPolicy } from '../resilience/policy.ts';
import { configRateLimits } from './rate-limit.ts';
import type { App } from './server.ts';
import { createMemoryRateLimitStore, createRedisRateLimitStore, createResilientRateLimitStore, type RateLimitStore } from './rate-limit-store.ts';

const redisUrl = process.env.TEST_REDIS_URL;

describe(`rate limits over HTTP (${redisUrl ? 'redis' : 'memory'})`, () => {
  let t: TestPlatform;
  let app: App;
  const controls: WidgetControls = { failNext: 0, handlerCalls: 0 };

  beforeAll(async () => {
    t = await createTestPlatform({
      env: { RATE_LIMIT_PRINCIPAL: '10', RATE_LIMIT_ORG: '20', RATE_LIMIT_IP: '5', RATE_LIMIT_WINDOW_SEC: '60', PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0' },
    });
    await createWidgetTable(t.db.owner);
    app = await createEdgeTestApp(t, controls);
  });
  afterAll(async () => {
    await app?.close();
    await t?.close();
  });

  const list = (user: string, orgId: string) =>
    app.inject({ url: `/v1/orgs/${orgId}/widgets`, headers: { authorization: `Bearer ${user}` } });

  it('advertises RateLimit-Policy and RateLimit, then answers 429 problem+json with Retry-After', async () => {
    const orgId = newId();
    const first = await list('carol', orgId);
    expect(first.statusCode).toBe(200);
    expect(first.headers['ratelimit-policy']).toBe('"principal";q=10;w=60, "org";q=20;w=60');
    expect(first.headers.ratelimit).toMatch(/^"principal";r=9;t=\d+$/);
    for (let i = 0; i < 9; i++) expect((await list('carol', orgId)).statusCode).toBe(200);
    const limited = await list('carol', orgId);
    expect(limited.statusCode).toBe(429);
    expect(limited.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(limited.json()).toMatchObject({ code: 'RATE_LIMIT.EXCEEDED', status: 429, limit: 'principal' });
    const retryAfter = Number(limited.headers['retry-after']);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(6); // one request's worth of a 10-per-60 s quota
    expect(limited.headers.ratelimit).toMatch(/^"principal";r=0;t=\d+$/);
    // Another principal in the same org still has its own quota (the org's is 20).
    expect((await list('dave', orgId)).statusCode).toBe(200);
    if (t.redis) {
      // Shared state lives in Redis (GCRA keys under the configured prefix), not in this process.
      expect(await t.redis.keys(`${t.config.redisPrefix}rl:org:${orgId}`)).toHaveLength(1);
    }
  });

  it('the org quota caps all its principals together', async () => {
    const orgId = newId();
    const users = ['u1', 'u2', 'u3'];
    const statuses: number[] = [];
    for (let i = 0; i < 24; i++) statuses.push((await list(users[i % 3]!, orgId)).statusCode);
    expect(statuses.filter((s) => s === 200)).toHaveLength(20);
    const limited = await list('u4', orgId);
    expect(limited.statusCode).toBe(429);
    expect(limited.json().limit).toBe('org');
  });

  it('fairness: org A at 10x its quota causes no 429 for org B', async () => {
    const orgA = newId();
    const orgB = newId();
    const usersA = Array.from({ length: 20 }, (_, i) => `a${i}`);
    const flood = Array.from({ length: 200 }, (_, i) => list(usersA[i % usersA.length]!, orgA));
    const steady = Array.from({ length: 10 }, (_, i) => list(`b${i}`, orgB));
    const [a, b] = await Promise.all([Promise.all(flood), Promise.all(steady)]);
    expect(a.filter((r) => r.statusCode === 200)).toHaveLength(20);
    expect(a.filter((r) => r.statusCode === 429)).toHaveLength(180);
    expect(b.map((r) => r.statusCode)).toEqual(Array(10).fill(200));
  });

  it('401 and 403 do not consume quota', async () => {
    const orgId = newId();
    // from another address: failures spend that address's auth-failure budget (auth-failure-limit.test.ts), not the principal's quota
    const remoteAddress = '192.0.2.99';
    for (let i = 0; i < 30; i++) {
      expect((await app.inject({ url: `/v1/orgs/${orgId}/widgets`, headers: { authorization: 'Bearer !' }, remoteAddress })).statusCode).toBe(401);
      const forbidden = await app.inject({ method: 'POST', url: `/v1/orgs/${orgId}/widgets`, headers: { authorization: 'Bearer reader' }, payload: { name: 'x' }, remoteAddress });
      expect(forbidden.statusCode).toBe(403);
    }
    const ok = await list('reader', orgId);
    expect(ok.statusCode).toBe(200);
    expect(ok.headers.ratelimit).toMatch(/^"principal";r=9;/);
  });

  it('takes an org\'s limit from a plan resolver when one is given', async () => {
    const premium = newId();
    const planned = await createEdgeTestApp(t, controls, {
      rateLimits: configRateLimits(t.config.edge, { orgPolicy: async (orgId) => (orgId === premium ? { quota: 500, windowSec: 60 } : undefined) }),
    });
    try {
      const get = (orgId: string) => planned.inject({ url: `/v1/orgs/${orgId}/widgets`, headers: { authorization: 'Bearer planner' } });
      expect((await get(premium)).headers['ratelimit-policy']).toBe('"principal";q=10;w=60, "org";q=500;w=60');
      expect((await get(newId())).headers['ratelimit-policy']).toBe('"principal";q=10;w=60, "org";q=20;w=60');
    } finally {
      await planned.close();
    }
  });

  it('public routes are limited per client IP; health and docs are not limited', async () => {
    const ping = (ip: string) => app.inject({ url: '/v1/public/ping', remoteAddress: ip });
    for (let i = 0; i < 5; i++) expect((await ping('192.0.2.10')).statusCode).toBe(200);
    const limited = await ping('192.0.2.10');
    expect(limited.statusCode).toBe(429);
    expect(limited.json().limit).toBe('ip');
    expect(limited.headers['ratelimit-policy']).toBe('"ip";q=5;w=60');
    expect((await ping('192.0.2.11')).statusCode).toBe(200);
    for (let i = 0; i < 10; i++) expect((await app.inject({ url: '/livez', remoteAddress: '192.0.2.10' })).statusCode).toBe(200);
  });
});

describe('GCRA stores', () => {
  it('memory: allows a full burst of the quota, then one request per interval', async () => {
    let now = 1_000_000;
    const store = createMemoryRateLimitStore({ now: () => now });
    const policy = { quota: 6, windowSec: 60 }; // one request per 10 s
    const decisions = [];
    for (let i = 0; i < 7; i++) decisions.push(await store.consume('k', policy));
    expect(decisions.map((d) => d.allowed)).toEqual([true, true, true, true, true, true, false]);
    expect(decisions.map((d) => d.remaining).slice(0, 6)).toEqual([5, 4, 3, 2, 1, 0]);
    expect(decisions[6]!.retryAfterSec).toBe(10);
    now += 9_999;
    expect((await store.consume('k', policy)).allowed).toBe(false);
    now += 1;
    expect((await store.consume('k', policy)).allowed).toBe(true);
    expect((await store.consume('other', policy)).remaining).toBe(5);
  });

  it.skipIf(!redisUrl)('redis: atomic across concurrent callers and processes (two clients, one quota)', async () => {
    const prefix = `plinth-test:${randomBytes(4).toString('hex')}:`;
    const r1 = createRedis(redisUrl!);
    const r2 = createRedis(redisUrl!);
    await Promise.all([r1, r2].map((r) => new Promise((resolve) => r.once('ready', resolve))));
    try {
      const stores: RateLimitStore[] = [createRedisRateLimitStore(r1, prefix), createRedisRateLimitStore(r2, prefix)];
      const policy = { quota: 50, windowSec: 60 };
      const results = await Promise.all(Array.from({ length: 200 }, (_, i) => stores[i % 2]!.consume('shared', policy)));
      expect(results.filter((d) => d.allowed)).toHaveLength(50);
      expect(results.filter((d) => !d.allowed).every((d) => d.retryAfterSec >= 1)).toBe(true);
      const ttl = await r1.pttl(`${prefix}rl:shared`);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(60_001);
    } finally {
      const keys = await r1.keys(`${prefix}*`);
      if (keys.length) await r1.del(...keys);
      r1.disconnect();
      r2.disconnect();
    }
  });

  for (const kind of ['memory', 'redis'] as const) {
    it.skipIf(kind === 'redis' && !redisUrl)(`${kind}: check() evaluates every bucket of a request in one call (one Redis command); a refusing gate consumes nothing`, async () => {
      const prefix = `plinth-test:${randomBytes(4).toString('hex')}:`;
      const redis = kind === 'redis' ? createRedis(redisUrl!) : undefined;
      const sent: string[] = [];
      if (redis) {
        await new Promise((resolve) => redis.once('ready', resolve));
        const send = redis.sendCommand.bind(redis);
        redis.sendCommand = ((cmd: { name: string }) => (sent.push(cmd.name), send(cmd as never))) as never;
      }
      try {
        const store = redis ? createRedisRateLimitStore(redis, prefix) : createMemoryRateLimitStore();
        const principal = { key: 'principal:p', policy: { quota: 2, windowSec: 60 }, mode: 'consume' as const };
        const org = { key: 'org:o', policy: { quota: 3, windowSec: 60 }, mode: 'consume' as const };
        const gate = { key: 'authfail:ip:x', policy: { quota: 1, windowSec: 60 }, mode: 'gate' as const };
        const first = await store.check([principal, org, gate]);
        expect(first.map((d) => d && [d.allowed, d.remaining])).toEqual([[true, 1], [true, 2], [true, 0]]);
        sent.length = 0;
        // Buckets are independent, as separate consume calls were: the org keeps counting after the principal is spent.
        await store.check([principal, org]);
        if (redis) expect(sent).toEqual(['evalsha']); // one round trip; the script is cached in Redis after the first EVAL
        const third = await store.check([principal, org]);
        expect(third.map((d) => d!.allowed)).toEqual([false, true]);
        expect(third[0]!.retryAfterSec).toBeGreaterThanOrEqual(1);
        // The gate is only peeked; once its budget is spent (by failures), nothing else is consumed.
        await store.consume(gate.key, gate.policy);
        const before = await store.peek(org.key, org.policy);
        const refused = await store.check([{ ...org }, gate]);
        expect(refused[1]!.allowed).toBe(false);
        expect(refused[0]).toBeUndefined();
        expect((await store.peek(org.key, org.policy)).remaining).toBe(before.remaining);
      } finally {
        if (redis) {
          const keys = await redis.keys(`${prefix}*`);
          if (keys.length) await redis.del(...keys);
          redis.disconnect();
        }
      }
    });
  }

  it('falls back to the local limiter at once when Redis is unreachable', async () => {
    // Port 1 on loopback: nothing listens, every command fails immediately (no offline queue).
    const redis = createRedis('redis://127.0.0.1:1');
    try {
      const store = createResilientRateLimitStore({ redis, prefix: 'x:', policy: createRedisPolicy(undefined, `redis-test-${randomBytes(2).toString('hex')}`) });
      const started = Date.now();
      const results = [];
      for (let i = 0; i < 4; i++) results.push(await store.consume('k', { quota: 3, windowSec: 60 }));
      expect(results.map((d) => d.allowed)).toEqual([true, true, true, false]);
      expect(store.lastSource()).toBe('memory');
      expect(Date.now() - started).toBeLessThan(2_000);
    } finally {
      redis.disconnect();
    }
  });
});
