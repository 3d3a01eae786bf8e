import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { captureLogger, countEffects, createEffectsTable, waitFor } from '../../../test/helpers/jobs.ts';
import { haveRedisServer, startOwnRedis, type OwnRedis } from '../../../test/helpers/own-services.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { openDatabase, type Database } from '../db/database.ts';
import { newId } from '../ids.ts';
import { createEventBus } from './event-bus.ts';

const TENANT = newId();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function publishMany(tp: TestPlatform, name: string, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 50) {
    await tp.db.withTenant(TENANT, async (trx) => {
      for (let j = i; j < Math.min(n, i + 50); j++) ids.push((await tp.events.add(trx, { name, tenantId: TENANT, payload: { j } })).id);
    });
  }
  return ids;
}

async function statusCounts(db: Database, consumer: string): Promise<Record<string, number>> {
  const { rows } = await sql<{ status: string; n: number }>`
    select status, count(*)::int as n from job_deliveries where consumer = ${consumer} group by status`.execute(db.app);
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}

describe('schedules', () => {
  let tp: TestPlatform;
  let second: Database | undefined;
  beforeAll(async () => {
    tp = await createTestPlatform({ events: { scheduleTickMs: 25 } });
  });
  afterAll(async () => {
    await second?.close();
    await tp?.close();
  });

  it('two worker instances: every due run of a schedule is claimed by exactly one of them', async () => {
    // In Postgres mode the second worker gets its own connection pool, as a separate process would.
    second = tp.testDb.url ? await openDatabase({ databaseUrl: tp.testDb.url }) : undefined;
    const runs: Array<{ worker: string; at: string }> = [];
    const workers = [createEventBus({ config: tp.config, logger: tp.logger, db: tp.db, scheduleTickMs: 25 }), createEventBus({ config: tp.config, logger: tp.logger, db: second ?? tp.db, scheduleTickMs: 25 })];
    workers.forEach((bus, i) => bus.schedule('test.tick', { everyMs: 150 }, async ({ scheduledAt }) => {
      runs.push({ worker: `w${i}`, at: scheduledAt.toISOString() });
      await sleep(20);
    }));
    await Promise.all(workers.map((w) => w.startWorker()));
    await sleep(2_000);
    await Promise.all(workers.map((w) => w.close()));
    const times = runs.map((r) => r.at);
    expect(new Set(times).size).toBe(times.length); // no run twice
    expect(runs.length).toBeGreaterThanOrEqual(5);
    expect(runs.length).toBeLessThanOrEqual(Math.ceil(2_000 / 150) + 1);
    const row = await tp.db.app.selectFrom('job_schedules').selectAll().where('name', '=', 'test.tick').executeTakeFirst();
    expect(new Date(row!.next_run_at).getTime()).toBeGreaterThan(Date.now() - 2_000);
    // The nightly cleanup is registered on every bus, and is not due now.
    const cleanup = await tp.db.app.selectFrom('job_schedules').selectAll().where('name', '=', 'platform.jobs_cleanup').executeTakeFirst();
    expect(new Date(cleanup!.next_run_at).getUTCMinutes()).toBe(17);
  });

  it('a long run of one schedule does not hold back the others', async () => {
    const bus = createEventBus({ config: tp.config, logger: tp.logger, db: tp.db, scheduleTickMs: 25 });
    let slowRuns = 0;
    let slowRunning = false;
    const fastDuringSlow: number[] = [];
    bus.schedule('test.long_pass', { everyMs: 100 }, async () => {
      slowRuns++;
      slowRunning = true;
      await sleep(1_500);
      slowRunning = false;
    });
    bus.schedule('test.quick', { everyMs: 100 }, async () => {
      if (slowRunning) fastDuringSlow.push(Date.now());
    });
    await bus.startWorker();
    await sleep(2_000);
    await bus.close();
    // One loop running every schedule in turn ran test.quick at most once per long pass.
    expect(slowRuns).toBeGreaterThanOrEqual(1);
    expect(fastDuringSlow.length).toBeGreaterThanOrEqual(5);
  });
});

describe('graceful worker shutdown', () => {
  let tp: TestPlatform;
  let started = 0;
  let finished = 0;
  beforeAll(async () => {
    tp = await createTestPlatform({ env: { JOBS_CONCURRENCY: '2', JOBS_POLL_MS: '20' } });
    await createEffectsTable(tp.db.owner);
    tp.events.subscribe('test.slow', 'test.slow_handler', async (event, { trx }) => {
      started++;
      await sleep(300);
      await sql`insert into test_effects (tenant_id, event_id, consumer) values (${event.tenantId}, ${event.id}, 'test.slow_handler')`.execute(trx);
      finished++;
    });
  });
  afterAll(async () => {
    await tp?.close();
  });

  it('stopping finishes the active jobs, keeps the rest, and a restarted worker completes them once', async () => {
    await tp.events.startWorker();
    const ids = await publishMany(tp, 'test.slow', 6);
    await waitFor(async () => started, (n) => n >= 1);
    await tp.events.stopWorker();
    const startedAtStop = started;
    expect(finished).toBe(startedAtStop); // nothing abandoned mid-handler
    const counts = await statusCounts(tp.db, 'test.slow_handler');
    expect(counts.done ?? 0).toBe(startedAtStop);
    expect((counts.done ?? 0) + (counts.pending ?? 0)).toBe(6);
    await sleep(400);
    expect(started).toBe(startedAtStop); // a stopped worker takes nothing new

    await tp.events.startWorker();
    await waitFor(() => statusCounts(tp.db, 'test.slow_handler'), (c) => c.done === 6, 20_000);
    const effects = await countEffects(tp.db.owner);
    expect(ids.map((id) => effects.get(`test.slow_handler/${id}`))).toEqual(ids.map(() => 1));
  });
});

describe.skipIf(!haveRedisServer)('sweeper after Redis loss (own redis-server)', () => {
  let tp: TestPlatform;
  let redis: OwnRedis;
  let handled = 0;
  let logs: Array<Record<string, any>>;
  beforeAll(async () => {
    redis = await startOwnRedis();
    const captured = captureLogger();
    logs = captured.lines;
    tp = await createTestPlatform({
      logger: captured.logger,
      // One batch at a time, so most of the 300 events are still queued in Redis (in batch jobs) when it dies.
      env: { REDIS_URL: redis.url, JOBS_SWEEP_AFTER_MS: '500', JOBS_POLL_MS: '20', JOBS_STALLED_MS: '1000', JOBS_CONCURRENCY: '1' },
      events: { sweepEveryMs: 200 },
    });
    await createEffectsTable(tp.db.owner);
    tp.events.subscribe('test.durable', 'test.durable_handler', async (event, { trx }) => {
      await sleep(5);
      await sql`insert into test_effects (tenant_id, event_id, consumer) values (${event.tenantId}, ${event.id}, 'test.durable_handler')`.execute(trx);
      handled++;
    });
    await tp.events.startWorker();
  });
  afterAll(async () => {
    await tp?.close();
    await redis?.stop();
  });

  it('Redis dies mid-run and comes back empty: every event is still processed exactly once in effect', async () => {
    const ids = await publishMany(tp, 'test.durable', 300);
    await waitFor(async () => handled, (n) => n >= 60, 20_000, 5);
    await redis.stop(); // every queued job in Redis is gone
    const handledAtLoss = handled;
    expect(handledAtLoss).toBeLessThan(300);
    const more = await publishMany(tp, 'test.durable', 100); // written while Redis is down: Postgres keeps them
    await sleep(300);
    await redis.start();
    await waitFor(() => statusCounts(tp.db, 'test.durable_handler'), (c) => c.done === 400, 60_000, 100);
    const effects = await countEffects(tp.db.owner);
    const all = [...ids, ...more];
    expect(all.filter((id) => effects.get(`test.durable_handler/${id}`) !== 1)).toEqual([]);
    expect(logs.some((l) => l.msg?.startsWith('sweeper re-dispatching'))).toBe(true);
  });
});
