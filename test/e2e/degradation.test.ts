import { createTenantCosts } from '../../src/platform/observability/tenant-costs.ts';
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEdgePlatform, type Platform } from '../../src/main.ts';
import { loadConfig } from '../../src/platform/config.ts';
import { openDatabase } from '../../src/platform/db/database.ts';
import { createFlags } from '../../src/platform/flags/flags.ts';
import type { App } from '../../src/platform/http/server.ts';
import { newId } from '../../src/platform/ids.ts';
import { createLifecycle } from '../../src/platform/lifecycle.ts';
import { migrate } from '../../src/platform/migrate/migrator.ts';
import { createRedis, type Redis } from '../../src/platform/redis.ts';
import { createEdgeTestApp, createWidgetTable, type WidgetControls } from '../helpers/edge-fixtures.ts';
import { startOwnPostgres, startOwnRedis, type OwnPostgres, type OwnRedis } from '../helpers/own-services.ts';
import { createEventBus } from '../../src/platform/outbox/event-bus.ts';

/**
 * Graceful degradation with real processes: a private redis-server and a private Postgres (initdb in a
 * temp dir, free loopback ports) are stopped and restarted under a running API.
 */
describe('degradation: Redis and Postgres stopped and restarted under a running API', () => {
  let pgServer: OwnPostgres;
  let redisServer: OwnRedis;
  let platform: Platform;
  let redis: Redis;
  let app: App;
  const auth = { authorization: 'Bearer alice' };
  const orgId = newId();

  const timed = async <T>(fn: () => Promise<T>) => {
    const started = Date.now();
    const value = await fn();
    return { value, ms: Date.now() - started };
  };
  const until = async (what: string, check: () => Promise<boolean>, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (await check().catch(() => false)) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`${what}: not within ${timeoutMs} ms`);
  };

  beforeAll(async () => {
    [pgServer, redisServer] = await Promise.all([startOwnPostgres(), startOwnRedis()]);
    const config = loadConfig({
      NODE_ENV: 'test',
      LOG_LEVEL: 'silent',
      DATABASE_URL: pgServer.url,
      REDIS_URL: redisServer.url,
      REDIS_PREFIX: `plinth-test:${randomBytes(4).toString('hex')}:`,
      PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0',
      RATE_LIMIT_PRINCIPAL: '40',
    });
    const logger = pino({ level: process.env.DEBUG_EDGE ? 'warn' : 'silent' });
    const db = await openDatabase({ databaseUrl: config.databaseUrl, connectTimeoutMs: 1_000 });
    await migrate(db.owner, { kind: db.kind });
    await createWidgetTable(db.owner);
    redis = createRedis(redisServer.url);
    await new Promise((r) => redis.once('ready', r));
    platform = { config, logger, db, redis, flags: await createFlags({ db }), lifecycle: createLifecycle({ logger, graceMs: 1_000, delayMs: 0 }), events: createEventBus({ config, logger, db }), tenantCosts: createTenantCosts({ db }), ...createEdgePlatform(config, logger, redis) };
    app = await createEdgeTestApp(platform, { failNext: 0, handlerCalls: 0 });
  }, 120_000);

  afterAll(async () => {
    await app?.close();
    await platform?.cache.close();
    await platform?.invalidations.close();
    redis?.disconnect();
    await platform?.db.close().catch(() => undefined);
    await redisServer?.stop();
    await pgServer?.destroy();
  });

  it('with Redis down: requests keep succeeding (local rate limiter, cache bypassed), /readyz degraded; recovers when it returns', async () => {
    const list = () => app.inject({ url: `/v1/orgs/${orgId}/widgets`, headers: auth });
    const settings = platform.cache.namespace<string>('degradation', { ttlSec: 60 });
    expect((await list()).statusCode).toBe(200);
    // GCRA state lives until its TAT: one emission interval (60 s / 40 = 1.5 s) after a single request.
    expect(await redis.exists(`${platform.config.redisPrefix}rl:principal:session:s-alice`)).toBe(1);
    expect((await app.inject({ url: '/readyz' })).json()).toMatchObject({ status: 'ok', checks: { redis: 'ok' } });

    await redisServer.stop();
    const { value: responses, ms } = await timed(() => Promise.all(Array.from({ length: 20 }, list)));
    expect(responses.map((r) => r.statusCode)).toEqual(Array(20).fill(200));
    expect(ms).toBeLessThan(3_000);
    // Limits still enforced, by the process-local limiter: 40 per window for this principal, ~21 used.
    expect(responses.at(-1)!.headers.ratelimit).toMatch(/^"principal";r=\d+;t=\d+$/);
    const rest = await Promise.all(Array.from({ length: 30 }, list));
    expect(rest.some((r) => r.statusCode === 429)).toBe(true);
    expect(platform.policies.redis.breakerState()).toBe('open');

    let loads = 0;
    const cached = await timed(() => settings.get(orgId, 'k', async () => `loaded-${++loads}`));
    expect(cached.value).toBe('loaded-1');
    expect(cached.ms).toBeLessThan(500);

    const ready = await app.inject({ url: '/readyz' });
    expect(ready.statusCode).toBe(200);
    expect(ready.json()).toMatchObject({ status: 'degraded', checks: { database: 'ok', redis: 'down' } });

    await redisServer.start();
    await until('Redis used again', async () => {
      await app.inject({ url: `/v1/orgs/${orgId}/widgets`, headers: { authorization: 'Bearer recovery' } });
      return (await redis.exists(`${platform.config.redisPrefix}rl:principal:session:s-recovery`)) === 1;
    }, 15_000);
    expect(platform.policies.redis.breakerState()).toBe('closed');
    expect((await app.inject({ url: '/readyz' })).json()).toMatchObject({ status: 'ok', checks: { redis: 'ok' } });
  });

  it('with Postgres down: 503 problem+json with Retry-After at once (no hang); recovers by itself when it returns', async () => {
    const list = () => app.inject({ url: `/v1/orgs/${orgId}/widgets`, headers: { authorization: 'Bearer pg-user' } });
    const create = (key: string) =>
      app.inject({ method: 'POST', url: `/v1/orgs/${orgId}/widgets`, headers: { authorization: 'Bearer pg-user', 'idempotency-key': key }, payload: { name: 'during outage' } });
    expect((await list()).statusCode).toBe(200);

    await pgServer.stop('immediate');
    const { value: down, ms } = await timed(list);
    expect(down.statusCode).toBe(503);
    expect(down.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(down.headers['retry-after']).toBe('2');
    expect(down.json()).toMatchObject({ code: 'DB.UNAVAILABLE', status: 503 });
    expect(down.body).not.toMatch(/ECONNREFUSED|127\.0\.0\.1|terminat/i);
    expect(ms).toBeLessThan(3_000);
    const post = await create('outage-1');
    expect(post.statusCode).toBe(503);
    const ready = await app.inject({ url: '/readyz' });
    expect(ready.statusCode).toBe(503);
    expect(ready.json().checks.database).toBe('down');

    await pgServer.start();
    await until('database back', async () => (await list()).statusCode === 200, 20_000);
    // The key was never claimed during the outage, so the retry creates the widget now.
    const retried = await create('outage-1');
    expect(retried.statusCode).toBe(201);
    expect((await create('outage-1')).headers['idempotent-replayed']).toBe('true');
    expect((await app.inject({ url: '/readyz' })).json().status).toBe('ok');
  });
  it('an Idempotency-Key claim whose release failed in the outage is released when Postgres returns (no 409 wait)', async () => {
    const controls: WidgetControls = { failNext: 0, handlerCalls: 0 };
    // A lease far longer than the test: only the deferred release (not lease expiry) can free the key.
    const leased = await createEdgeTestApp({ ...platform, config: { ...platform.config, edge: { ...platform.config.edge, idempotencyLeaseSec: 300 } } }, controls);
    const send = () =>
      leased.inject({ method: 'POST', url: `/v1/orgs/${orgId}/slow-widgets`, headers: { authorization: 'Bearer idem-user', 'idempotency-key': 'held-in-outage' }, payload: { name: 'held' } });
    try {
      const first = send();
      await until('claimed', async () => controls.release !== undefined, 10_000);
      await pgServer.stop('immediate');
      controls.release!();
      controls.release = undefined;
      const failed = await first; // the handler's insert fails: nothing committed
      expect(failed.statusCode).toBe(503);
      expect((await send()).statusCode).toBe(503); // retries during the outage: 503 + Retry-After, not 409
      const owed = leased.idempotencyClaims?.pending(); // the release could not reach the database
      await pgServer.start();
      const back = Date.now();
      // Retry as a client would, until the handler runs again: never 409 for long, only 503 while reconnecting.
      let retry: ReturnType<typeof send> | undefined;
      const seen = new Set<number>();
      while (!retry && Date.now() - back < 15_000) {
        const res = send();
        let settled = false;
        const running = (async () => {
          while (!settled && !controls.release) await new Promise((r) => setTimeout(r, 10));
          return 'running' as const;
        })();
        const outcome = await Promise.race([res, running]);
        settled = true;
        if (outcome === 'running') retry = res;
        else {
          seen.add(outcome.statusCode);
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      const released = Date.now() - back;
      expect(retry).toBeDefined();
      expect(released).toBeLessThan(10_000);
      controls.release!();
      controls.release = undefined;
      const ok = await retry!;
      expect(ok.statusCode).toBe(201);
      expect(ok.headers['idempotent-replayed']).toBeUndefined();
      expect([...seen].filter((s) => s !== 503)).toEqual([]); // no 409 IN_FLIGHT on the way back
      expect(owed).toBe(1); // … so it was kept and retried in the background
      expect(leased.idempotencyClaims!.pending()).toBe(0);
      console.info(`key usable again ${released} ms after Postgres was back (status codes before: ${[...seen].join(',') || 'none'})`);
    } finally {
      await leased.close();
    }
  }, 60_000);
});
