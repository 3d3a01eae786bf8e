import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signup } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import type { Redis } from '../../platform/redis.ts';
import { BrokenCircuitError, createRedisPolicy, type ResiliencePolicy } from '../../platform/resilience/policy.ts';
import { createIdentityRepo } from './identity.repo.ts';
import { createSessionStore } from './identity.sessions.ts';

const mode = `${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'}${process.env.TEST_REDIS_URL ? '+redis' : ''}`;

/** A stand-in Redis that records every command and answers with `answer` (a hang, a failure, …). */
function fakeRedis(answer: () => Promise<unknown>) {
  const calls: string[] = [];
  const cmd = (name: string) => (..._args: unknown[]) => {
    calls.push(name);
    return answer();
  };
  const redis = {
    get: cmd('get'),
    set: cmd('set'),
    del: cmd('del'),
    multi: () => {
      const m = { set: () => m, exec: cmd('exec') };
      return m;
    },
  };
  return { redis: redis as unknown as Redis, calls };
}

const openBreaker: ResiliencePolicy = {
  name: 'redis',
  execute: () => Promise.reject(new BrokenCircuitError()),
  breakerState: () => 'open',
};

describe(`identity session cache goes through the shared redis policy (${mode})`, () => {
  let t: TestPlatform;
  const logger = pino({ level: 'silent' });
  beforeAll(async () => {
    t = await createTestPlatform();
  });
  afterAll(async () => t?.close());

  it('with the breaker open, Redis is not called at all and Postgres answers', async () => {
    const s = await signup(t.app);
    const { redis, calls } = fakeRedis(() => Promise.resolve(null));
    const store = createSessionStore({ repo: createIdentityRepo(t.db), redis, policy: openBreaker, prefix: 'x:', logger });
    expect(await store.authenticate(s.token)).toMatchObject({ kind: 'user', userId: s.userId });
    await store.forget(['a']);
    await store.tombstone(['b']);
    expect(calls).toEqual([]);
  });

  it('a Redis that hangs costs a request at most the policy timeout', async () => {
    const s = await signup(t.app);
    const { redis } = fakeRedis(() => new Promise(() => {}));
    const store = createSessionStore({ repo: createIdentityRepo(t.db), redis, policy: createRedisPolicy(logger, 'redis-sessions-test-hang'), prefix: 'x:', logger });
    const started = Date.now();
    expect(await store.authenticate(s.token)).toMatchObject({ userId: s.userId });
    // get + fill each bounded by the 500 ms timeout (without the policy this never resolves).
    expect(Date.now() - started).toBeLessThan(3_000);
  }, 10_000);

  it('failing Redis calls open the breaker; after that Redis is skipped and sessions still work', async () => {
    const s = await signup(t.app);
    const { redis, calls } = fakeRedis(() => Promise.reject(new Error('Connection is closed.')));
    const policy = createRedisPolicy(logger, 'redis-sessions-test-fail');
    const store = createSessionStore({ repo: createIdentityRepo(t.db), redis, policy, prefix: 'x:', logger });
    expect(await store.authenticate(s.token)).toMatchObject({ userId: s.userId }); // get + set fail: 2
    expect(await store.authenticate(s.token)).toMatchObject({ userId: s.userId }); // get fails: 3 → open
    expect(policy.breakerState()).toBe('open');
    const before = calls.length;
    expect(await store.authenticate(s.token)).toMatchObject({ userId: s.userId });
    expect(calls.length).toBe(before);
  });
});
