import { sql } from 'kysely';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createTestDatabase, usingPostgres, type TestDatabase } from '../testing/test-db.ts';
import { createRegistry } from './registry.ts';
import { runDueSchedules } from './scheduler.ts';

const log = pino({ level: 'silent' });

describe('schedules under clock skew (one clock: the database)', () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase();
  });
  afterAll(() => t.drop());
  afterEach(() => vi.useRealTimers());

  // Embedded, PGlite's now() is this process's clock, so app and database cannot disagree; the skew needs a
  // database with a clock of its own.
  it.runIf(usingPostgres)('a worker whose clock runs behind never re-arms an occurrence that already ran', async () => {
    const runs: Date[] = [];
    const registry = createRegistry();
    registry.schedule('test.per_minute', { cron: '* * * * *' }, async ({ scheduledAt }) => void runs.push(scheduledAt));
    // The occurrence of the current minute is due by the database's clock…
    await sql`insert into job_schedules (name, next_run_at) values ('test.per_minute', date_trunc('minute', now()))`.execute(t.db.app);
    const { rows } = await sql<{ boundary: Date }>`select date_trunc('minute', now()) as boundary`.execute(t.db.app);
    // …while this worker's clock is 300 ms before that minute began (its cron would say "next: this minute").
    vi.useFakeTimers({ toFake: ['Date'], now: new Date(rows[0]!.boundary).getTime() - 300 });
    for (let i = 0; i < 5; i++) await runDueSchedules(t.db, registry, log, `skewed-${i}`);
    expect(runs).toHaveLength(1);
    const next = await t.db.app.selectFrom('job_schedules').select('next_run_at').where('name', '=', 'test.per_minute').executeTakeFirstOrThrow();
    expect(new Date(next.next_run_at).getTime()).toBe(new Date(rows[0]!.boundary).getTime() + 60_000);
  });

  it('concurrent runners claim each occurrence exactly once', async () => {
    const runs: string[] = [];
    const registry = createRegistry();
    registry.schedule('test.every', { everyMs: 60_000 }, async ({ scheduledAt }) => void runs.push(scheduledAt.toISOString()));
    for (let round = 0; round < 10; round++) {
      await sql`insert into job_schedules (name, next_run_at) values ('test.every', now() - interval '1 second')
                on conflict (name) do update set next_run_at = excluded.next_run_at`.execute(t.db.app);
      await Promise.all([1, 2, 3, 4].map((w) => runDueSchedules(t.db, registry, log, `worker-${w}`)));
    }
    expect(runs).toHaveLength(10);
    expect(new Set(runs).size).toBe(10);
  });
});
