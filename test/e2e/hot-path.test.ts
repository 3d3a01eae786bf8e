import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiApp, createModules, type Platform } from '../../src/main.ts';
import { createRedisInvalidationBus, type InvalidationBus } from '../../src/platform/cache/invalidation-bus.ts';
import type { App } from '../../src/platform/http/server.ts';
import type { Redis } from '../../src/platform/redis.ts';
import { runAdminCommand } from '../../src/modules/identity/index.ts';
import { addMember, signup, type SignedUp } from '../helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../helpers/test-platform.ts';

const mode = process.env.TEST_REDIS_URL ? 'two instances over Redis pub/sub' : 'two instances on the in-process bus';

/**
 * The authenticated hot path: how many round trips a cached request costs (counted where they leave the
 * process: every statement the database layer sends — its query observer — and every command the app's
 * Redis client sends), and that the caches which make it cheap are invalidated on every instance.
 *
 * Two API instances (A = the test platform, B = a second composition with its own caches) over one
 * database and, in the services run, one Redis; B has its own subscriber, so every invalidation below
 * travels through Redis. Each change is made on A after B has cached the credential, and B must refuse
 * at once (well within the bound, CACHE_L1_TTL_MS): the measured delays are printed.
 */
describe(`hot path: round trips, and cross-instance invalidation of sessions and memberships (${mode})`, () => {
  let t: TestPlatform;
  let b: App;
  let busB: InvalidationBus;
  const delays: Record<string, number> = {};
  const statements: string[] = [];
  const redisCommands: string[] = [];
  let counting = false;

  beforeAll(async () => {
    // A long L1 lifetime: only an invalidation can explain a prompt refusal on B.
    t = await createTestPlatform({
      env: { CACHE_L1_TTL_MS: '600000' },
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
    busB = t.redis
      ? createRedisInvalidationBus({ redis: t.redis, prefix: t.config.redisPrefix, retryForMs: 5_000, connectionName: `plinth-test-inval-b-${process.pid}`, minBackoffMs: 20, maxBackoffMs: 200 })
      : t.invalidations;
    await busB.ready();
    await t.invalidations.ready();
    const platformB: Platform = { ...t, invalidations: busB };
    b = await createApiApp(platformB, createModules(platformB));
  });
  afterAll(async () => {
    console.log(`[invalidation] ${mode}: ms until instance B refused: ${JSON.stringify(delays)}`);
    await b?.close();
    if (busB && busB !== t.invalidations) await busB.close();
    await t?.close();
  });

  /** Polls B until `url` answers `status`; records how long that took after the change on A. */
  async function refusedOnB(name: string, url: string, headers: Record<string, string>, status: number): Promise<void> {
    const changed = Date.now();
    let got = 0;
    while (Date.now() - changed < 3_000) {
      got = (await b.inject({ url, headers })).statusCode;
      if (got === status) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    delays[name] = Date.now() - changed;
    expect(got).toBe(status);
    expect(delays[name]).toBeLessThan(1_000);
  }

  async function cachedOnB(url: string, headers: Record<string, string>): Promise<void> {
    for (let i = 0; i < 2; i++) expect((await b.inject({ url, headers })).statusCode).toBe(200);
  }

  /** What one steady-state request costs on A (after a warm-up request filled the caches). */
  async function roundTrips(url: string, headers: Record<string, string>): Promise<{ pg: number; redis: number; sql: string[]; commands: string[] }> {
    expect((await t.app.inject({ url, headers })).statusCode).toBe(200);
    statements.length = 0;
    redisCommands.length = 0;
    counting = true;
    const res = await t.app.inject({ url, headers });
    counting = false;
    expect(res.statusCode).toBe(200);
    return { pg: statements.length, redis: redisCommands.length, sql: [...statements], commands: [...redisCommands] };
  }

  it('round trips of a cached task read and of GET /v1/me', async () => {
    const owner = await signup(t.app);
    const project = (await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/projects`, headers: owner.auth, payload: { key: 'HOT', name: 'Hot' } })).json();
    const task = (await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/projects/${project.id}/tasks`, headers: owner.auth, payload: { title: 'hot' } })).json();
    const read = await roundTrips(`/v1/orgs/${owner.orgId}/tasks/${task.id}`, owner.auth);
    const me = await roundTrips('/v1/me', owner.auth);
    const where = t.redis ? 'services' : 'embedded';
    console.log(`[round trips] ${where}: cached task read: ${read.pg} Postgres, ${read.redis} Redis ${JSON.stringify(read)}`);
    console.log(`[round trips] ${where}: GET /v1/me: ${me.pg} Postgres, ${me.redis} Redis ${JSON.stringify(me)}`);
    // Session, membership and the task itself come from process memory; all rate-limit buckets are one
    // script, and none is sent while the keys' local leases have cells (rate-limit-lease.ts; before: 3
    // Postgres statements + 4 Redis commands for the read; /v1/me 5 + 3).
    const atMostTheScript = (commands: string[]) => expect(commands.length <= 1 && commands.every((c) => c === 'evalsha'), commands.join()).toBe(true);
    expect(read.pg).toBe(0);
    if (t.redis) atMostTheScript(read.commands);
    else expect(read.commands).toEqual([]);
    // /v1/me reads only its own data (the user and their memberships), nothing to authenticate.
    expect(me.sql.some((q) => q.includes('token_hash'))).toBe(false);
    if (t.redis) atMostTheScript(me.commands);
    else expect(me.commands).toEqual([]);
  });

  it('logout', async () => {
    const s = await signup(t.app);
    await cachedOnB('/v1/me', s.auth);
    expect((await t.app.inject({ method: 'POST', url: '/v1/auth/logout', headers: s.auth })).statusCode).toBe(204);
    await refusedOnB('logout', '/v1/me', s.auth, 401);
  });

  // Embedded, the bus is in-process: logout, role change and removal show it; the rest runs with services.
  const embedded = !process.env.TEST_REDIS_URL;

  it.skipIf(embedded)('revoking the other sessions from one device', async () => {
    const s = await signup(t.app);
    const login = (await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: s.email, password: s.password } })).json();
    const second = { authorization: `Bearer ${login.token}` };
    await cachedOnB('/v1/me', second);
    // Revoke every other session (the one B cached) from the first device.
    expect((await t.app.inject({ method: 'DELETE', url: '/v1/me/sessions', headers: s.auth })).statusCode).toBeLessThan(300);
    await refusedOnB('session-revocation', '/v1/me', second, 401);
    expect((await b.inject({ url: '/v1/me', headers: s.auth })).statusCode).toBe(200);
  });

  it('role change and member removal', async () => {
    const owner = await signup(t.app);
    const admin = await signup(t.app);
    await addMember(t.app, owner, owner.orgId, admin, 'admin');
    const keys = `/v1/orgs/${owner.orgId}/api-keys`;
    await cachedOnB(keys, admin.auth);
    const demote = await t.app.inject({ method: 'PATCH', url: `/v1/orgs/${owner.orgId}/members/${admin.userId}`, headers: owner.auth, payload: { role: 'viewer' } });
    expect(demote.statusCode).toBe(200);
    await refusedOnB('role-change', keys, admin.auth, 403);
    const org = `/v1/orgs/${owner.orgId}`;
    await cachedOnB(org, admin.auth);
    expect((await t.app.inject({ method: 'DELETE', url: `/v1/orgs/${owner.orgId}/members/${admin.userId}`, headers: owner.auth })).statusCode).toBe(204);
    await refusedOnB('member-removal', org, admin.auth, 404);
  });

  it.skipIf(embedded)('API key revocation and user disable (sessions and keys of the disabled user)', async () => {
    const operator = await signup(t.app);
    expect(await runAdminCommand(t.modules.identity, ['grant', operator.email], () => {})).toBe(0);
    const victim: SignedUp = await signup(t.app);
    const created = await t.app.inject({ method: 'POST', url: `/v1/orgs/${victim.orgId}/api-keys`, headers: victim.auth, payload: { name: 'k', scopes: ['projects:read'] } });
    expect(created.statusCode).toBe(201);
    const keyAuth = { authorization: `Bearer ${created.json().secret}` };
    const projects = `/v1/orgs/${victim.orgId}/projects`;
    await cachedOnB(projects, keyAuth);
    await cachedOnB(projects, victim.auth);
    // The operator's own session was cached before the grant: the grant invalidated it everywhere.
    const disable = await b.inject({ method: 'POST', url: `/v1/admin/users/${victim.userId}/disable`, headers: operator.auth });
    expect(disable.statusCode).toBe(200);
    await refusedOnB('user-disable (session)', projects, victim.auth, 401);
    await refusedOnB('user-disable (api key)', projects, keyAuth, 401);

    const owner = await signup(t.app);
    const k2 = (await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/api-keys`, headers: owner.auth, payload: { name: 'k2', scopes: ['projects:read'] } })).json();
    const k2Auth = { authorization: `Bearer ${k2.secret}` };
    await cachedOnB(`/v1/orgs/${owner.orgId}/projects`, k2Auth);
    expect((await t.app.inject({ method: 'DELETE', url: `/v1/orgs/${owner.orgId}/api-keys/${k2.id}`, headers: owner.auth })).statusCode).toBe(204);
    await refusedOnB('api-key-revocation', `/v1/orgs/${owner.orgId}/projects`, k2Auth, 401);
  });

  it.skipIf(!process.env.TEST_REDIS_URL)("after B's subscriber connection is killed it resubscribes, and invalidations resume", async () => {
    const s = await signup(t.app);
    await cachedOnB('/v1/me', s.auth);
    const list = (await t.redis!.call('CLIENT', 'LIST')) as string;
    const line = list.split('\n').find((l) => l.includes(`name=plinth-test-inval-b-${process.pid} `));
    expect(line).toBeDefined();
    const id = /\bid=(\d+)/.exec(line!)![1]!;
    await t.redis!.call('CLIENT', 'KILL', 'ID', id);
    const killed = Date.now();
    // Deaf once the connection has ended: B bypasses its caches until it is subscribed again.
    while (busB.live() && Date.now() - killed < 2_000) await new Promise((r) => setTimeout(r, 1));
    expect(busB.live()).toBe(false);
    await busB.ready(5_000);
    delays['resubscribed after CLIENT KILL'] = Date.now() - killed;
    await cachedOnB('/v1/me', s.auth);
    expect((await t.app.inject({ method: 'POST', url: '/v1/auth/logout', headers: s.auth })).statusCode).toBe(204);
    await refusedOnB('logout after resubscribe', '/v1/me', s.auth, 401);
    // Subscribed the whole time since: B's cached entry was dropped by the message, not by a bypass.
    expect(busB.live()).toBe(true);
  });
});
