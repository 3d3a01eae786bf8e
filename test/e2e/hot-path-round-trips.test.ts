import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from '../../src/platform/redis.ts';
import { signup, type SignedUp } from '../helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../helpers/test-platform.ts';

/**
 * Round trips per request on the authenticated hot path, counted where they leave the process: every
 * statement the database layer sends (its query observer) and every command the app's Redis client sends.
 * The figures are printed (README's security section quotes them) and bounded, so a change that adds a
 * round trip to the hot path fails here.
 */
describe('hot path round trips', () => {
  let t: TestPlatform;
  let owner: SignedUp;
  let taskUrl: string;
  const statements: string[] = [];
  const redisCommands: string[] = [];
  let counting = false;

  beforeAll(async () => {
    t = await createTestPlatform({
      db: { onQuery: ({ sql }) => void (counting && statements.push(sql.replace(/\s+/g, ' ').slice(0, 80))) },
    });
    if (t.redis) {
      const redis = t.redis as Redis & { sendCommand: (cmd: { name: string }) => unknown };
      const send = redis.sendCommand.bind(redis);
      redis.sendCommand = ((cmd: { name: string }) => {
        if (counting) redisCommands.push(cmd.name);
        return send(cmd as never);
      }) as never;
    }
    owner = await signup(t.app);
    const project = (await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/projects`, headers: owner.auth, payload: { key: 'HOT', name: 'Hot' } })).json();
    const task = (await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/projects/${project.id}/tasks`, headers: owner.auth, payload: { title: 'hot' } })).json();
    taskUrl = `/v1/orgs/${owner.orgId}/tasks/${task.id}`;
  });
  afterAll(async () => t?.close());

  async function count(url: string): Promise<{ pg: number; redis: number; sql: string[]; commands: string[] }> {
    // Warm: the first request fills the caches; the measured one is the steady state.
    expect((await t.app.inject({ url, headers: owner.auth })).statusCode).toBe(200);
    statements.length = 0;
    redisCommands.length = 0;
    counting = true;
    const res = await t.app.inject({ url, headers: owner.auth });
    counting = false;
    expect(res.statusCode).toBe(200);
    return { pg: statements.length, redis: redisCommands.length, sql: [...statements], commands: [...redisCommands] };
  }

  it('a cached task read and GET /v1/me', async () => {
    const read = await count(taskUrl);
    const me = await count('/v1/me');
    console.log(`[round trips] ${t.redis ? 'services' : 'embedded'}: cached task read: ${read.pg} Postgres, ${read.redis} Redis ${JSON.stringify(read)}`);
    console.log(`[round trips] ${t.redis ? 'services' : 'embedded'}: GET /v1/me: ${me.pg} Postgres, ${me.redis} Redis ${JSON.stringify(me)}`);
    // Session, membership and the task itself come from process memory; all rate-limit buckets are one
    // script (before this change: 3 Postgres statements + 4 Redis commands for the read).
    expect(read.pg).toBe(0);
    expect(read.commands).toEqual(t.redis ? ['evalsha'] : []);
    // /v1/me reads only its own data (the user and their memberships), nothing to authenticate.
    expect(me.sql.some((q) => q.includes('token_hash'))).toBe(false);
    expect(me.commands).toEqual(t.redis ? ['evalsha'] : []);
  });
});
