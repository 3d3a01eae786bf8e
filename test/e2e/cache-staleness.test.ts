import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signup } from '../helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../helpers/test-platform.ts';

/**
 * The invalidation a change owes is carried by the outbox: when the writer cannot reach Redis at the
 * moment of the update, the cached old row does not outlive the link's recovery by more than the
 * handler's backoff (here: well under 5 s), instead of the cache TTL (300 s).
 */
describe.runIf(process.env.TEST_REDIS_URL)('cache invalidation survives a Redis outage of the writer', () => {
  let t: TestPlatform;
  beforeAll(async () => {
    t = await createTestPlatform({ env: { RATE_LIMIT_PRINCIPAL: '100000', RATE_LIMIT_ORG: '100000', CACHE_L1_TTL_MS: '60000' } });
    await t.events.startWorker();
  });
  afterAll(() => t?.close());

  it('a task updated while Redis was unreachable is served fresh once the invalidation lands', async () => {
    const owner = await signup(t.app);
    const project = (await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/projects`, headers: owner.auth, payload: { key: 'CAC', name: 'Cache' } })).json();
    const task = (await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/projects/${project.id}/tasks`, headers: owner.auth, payload: { title: 'before' } })).json();
    const read = async () => (await t.app.inject({ url: `/v1/orgs/${owner.orgId}/tasks/${task.id}`, headers: owner.auth })).json().title as string;
    expect(await read()).toBe('before'); // cached now (L1 and Redis)

    const policy = t.policies.redis;
    const execute = policy.execute;
    policy.execute = (async () => {
      throw new Error('partitioned from Redis');
    }) as typeof policy.execute;
    const patched = await t.app.inject({ method: 'PATCH', url: `/v1/orgs/${owner.orgId}/tasks/${task.id}`, headers: owner.auth, payload: { title: 'after' } });
    expect(patched.statusCode).toBe(200);
    // While partitioned the handler keeps failing (and retrying); the cache still has "before" in Redis.
    await new Promise((r) => setTimeout(r, 300));
    const stale = await t.redis!.get(`${t.config.redisPrefix}tenant:${owner.orgId}:tasks:${task.id}`);
    expect(stale).toContain('before');
    policy.execute = execute; // the link heals

    const healed = Date.now();
    let title = await read();
    while (title !== 'after' && Date.now() - healed < 5_000) {
      await new Promise((r) => setTimeout(r, 100));
      title = await read();
    }
    expect(title).toBe('after');
  });
});
