import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signup } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { createMemoryInvalidationBus, type InvalidationBus } from '../../platform/cache/invalidation-bus.ts';
import { PLATFORM_AUDIT_TENANT } from '../audit/index.ts';
import { createIdentityRepo } from './identity.repo.ts';
import { createSessionStore } from './identity.sessions.ts';
import { sha256Hex } from './identity.tokens.ts';

const mode = `${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'}${process.env.TEST_REDIS_URL ? '+redis' : ''}`;

/** A bus that reports `live` as told and never delivers anything: a process whose messages are lost. */
function lossyBus(live: () => boolean): InvalidationBus {
  return { kind: 'memory', subscribe: () => () => {}, publish: async () => false, live, ready: async () => {}, close: async () => {} };
}

describe(`identity session cache (${mode})`, () => {
  let t: TestPlatform;
  let userId: string;
  let lookups = 0;
  beforeAll(async () => {
    t = await createTestPlatform({ db: { onQuery: ({ sql }) => void (sql.includes('"token_hash"') && lookups++) } });
    userId = (await signup(t.app)).userId;
  });
  afterAll(async () => t?.close());
  /** A fresh session of the test user (no argon2 per test). */
  async function newSession(): Promise<{ token: string; userId: string }> {
    const repo = createIdentityRepo(t.db);
    const store = createSessionStore({ repo, invalidations: createMemoryInvalidationBus(), cacheMaxAgeMs: 0 });
    const { token } = await repo.inTenant(PLATFORM_AUDIT_TENANT, (trx) => store.create(trx, userId, {}));
    return { token, userId };
  }
  const revokeInDb = (s: { token: string }) =>
    t.db.owner.updateTable('sessions').set({ revoked_at: new Date() }).where('token_hash', '=', sha256Hex(s.token)).execute();

  it('a cached session costs no lookup; an invalidation reaches another store on the bus at once', async () => {
    const s = await newSession();
    const bus = createMemoryInvalidationBus();
    const repo = createIdentityRepo(t.db);
    const a = createSessionStore({ repo, invalidations: bus, cacheMaxAgeMs: 60_000 });
    const b = createSessionStore({ repo, invalidations: bus, cacheMaxAgeMs: 60_000 }); // "another instance"
    expect(await a.authenticate(s.token)).toMatchObject({ kind: 'user', userId: s.userId });
    expect(await b.authenticate(s.token)).toMatchObject({ userId: s.userId });
    const before = lookups;
    for (let i = 0; i < 5; i++) expect(await b.authenticate(s.token)).toMatchObject({ userId: s.userId });
    expect(lookups).toBe(before);
    await revokeInDb(s);
    // Without an invalidation the cache still answers (that is what the bound is for)…
    expect(await b.authenticate(s.token)).not.toBeNull();
    // …and after it, every store asks Postgres again and refuses the token.
    await a.invalidate([sha256Hex(s.token)]);
    expect(await b.authenticate(s.token)).toBeNull();
    expect(await a.authenticate(s.token)).toBeNull();
    // Refusals are not cached: each is a lookup (the auth-failure budget guards those).
    const refusedAt = lookups;
    expect(await b.authenticate(s.token)).toBeNull();
    expect(lookups).toBe(refusedAt + 1);
  });

  it('beforeLookup runs on a miss only, and can refuse before Postgres is asked', async () => {
    const s = await newSession();
    const store = createSessionStore({ repo: createIdentityRepo(t.db), invalidations: createMemoryInvalidationBus(), cacheMaxAgeMs: 60_000 });
    let calls = 0;
    const beforeLookup = async () => void calls++;
    await store.authenticate(s.token, { beforeLookup });
    await store.authenticate(s.token, { beforeLookup });
    expect(calls).toBe(1);
    const before = lookups;
    const refuse = async () => {
      throw new Error('budget spent');
    };
    await expect(store.authenticate(`${s.token.slice(0, -1)}x`, { beforeLookup: refuse })).rejects.toThrow('budget spent');
    expect(lookups).toBe(before);
  });

  it('a lost invalidation is bounded by the cache lifetime; a deaf bus bypasses the cache', async () => {
    const s = await newSession();
    let live = true;
    const store = createSessionStore({ repo: createIdentityRepo(t.db), invalidations: lossyBus(() => live), cacheMaxAgeMs: 300 });
    const started = Date.now();
    expect(await store.authenticate(s.token)).not.toBeNull();
    await revokeInDb(s);
    let refusedAfter = -1;
    while (Date.now() - started < 2_000) {
      if ((await store.authenticate(s.token)) === null) {
        refusedAfter = Date.now() - started;
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(refusedAfter).toBeGreaterThanOrEqual(0);
    expect(refusedAfter).toBeLessThanOrEqual(300 + 100);

    const other = await newSession();
    live = false;
    expect(await store.authenticate(other.token)).not.toBeNull();
    const before = lookups;
    expect(await store.authenticate(other.token)).not.toBeNull();
    expect(lookups).toBe(before + 1); // not served from memory while deaf
    await revokeInDb(other);
    expect(await store.authenticate(other.token)).toBeNull(); // at once
  });
});
