import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../config.ts';
import { createTestDatabase, type TestDatabase } from '../testing/test-db.ts';
import { createEventBus, type EventBus } from './event-bus.ts';

const logger = pino({ level: 'silent' });

async function waitFor(check: () => boolean, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Two worker versions on one database: "old" knows consumer a, "new" knows a and b (a rolling deploy). */
describe('durable consumers across worker versions', () => {
  let t: TestDatabase;
  const buses: EventBus[] = [];
  const seen = { a: [] as string[], b: [] as string[] };
  function bus(consumers: Array<'a' | 'b'>, event: string): EventBus {
    // The in-process transport, so only Postgres connects the two versions (as Redis-less processes would).
    const config = loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent', JOBS_SWEEP_AFTER_MS: '200', JOBS_POLL_MS: '60000' });
    const b = createEventBus({ config, logger, db: t.db, sweepEveryMs: 100 });
    for (const c of consumers) {
      b.subscribe(event, `test.${c}_${event.split('.')[1]}`, async (e) => void seen[c].push(e.id));
    }
    buses.push(b);
    return b;
  }
  async function publish(b: EventBus, name: string, n: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      await t.db.app.transaction().execute(async (trx) => void ids.push((await b.add(trx, { name, payload: { i } })).id));
    }
    return ids;
  }

  beforeAll(async () => {
    t = await createTestDatabase();
  });
  afterAll(async () => {
    for (const b of buses) await b.close();
    await t.drop();
  });

  it('an old worker relaying fans out to the consumers a newer worker declared', async () => {
    const newer = bus(['a', 'b'], 'test.mixed');
    await newer.startWorker(); // declares a and b
    await newer.stopWorker();
    const older = bus(['a'], 'test.mixed');
    const ids = await publish(older, 'test.mixed', 40);
    expect(await older.relayOnce()).toBe(40);
    const rows = await t.db.app.selectFrom('job_deliveries').select(['consumer']).where('event_id', 'in', ids).execute();
    expect(rows.filter((r) => r.consumer === 'test.a_mixed')).toHaveLength(40);
    expect(rows.filter((r) => r.consumer === 'test.b_mixed')).toHaveLength(40);
    // The newer worker, running again, processes b's deliveries the old one could not.
    await newer.startWorker();
    await waitFor(() => ids.every((id) => seen.b.includes(id)));
    expect(seen.b.filter((id) => ids.includes(id))).toHaveLength(40);
    await newer.stopWorker(); // the next test needs the old worker to relay alone
  });

  it('a consumer seen for the first time gets the recent events relayed before it existed (backfill)', async () => {
    const older = bus(['a'], 'test.backfill');
    const ids = await publish(older, 'test.backfill', 30);
    expect(await older.relayOnce()).toBe(30); // only a knows this event so far
    const newer = bus(['a', 'b'], 'test.backfill');
    await newer.startWorker();
    await waitFor(() => ids.every((id) => seen.b.includes(id)));
    expect(seen.b.filter((id) => ids.includes(id))).toHaveLength(30);
    // a was declared already: no second delivery for it.
    const rows = await t.db.app.selectFrom('job_deliveries').select('consumer').where('event_id', 'in', ids).where('consumer', '=', 'test.a_backfill').execute();
    expect(rows).toHaveLength(30);
    await newer.stopWorker(); // the next test needs its own bus to relay alone
  });

  it('a consumer no running worker has declared for JOBS_CONSUMER_RETIRE_MS gets no new deliveries', async () => {
    const retired = bus(['a', 'b'], 'test.retire');
    await retired.startWorker(); // declares a and b…
    await retired.stopWorker();
    // …then b is removed from the code: only a is still declared by running workers.
    await t.db.app.updateTable('job_consumers').set({ last_seen_at: new Date(Date.now() - 2 * 3_600_000) }).where('consumer', '=', 'test.b_retire').execute();
    const current = bus(['a'], 'test.retire');
    const ids = await publish(current, 'test.retire', 5);
    expect(await current.relayOnce()).toBe(5);
    const rows = await t.db.app.selectFrom('job_deliveries').select('consumer').where('event_id', 'in', ids).execute();
    expect(rows.map((r) => r.consumer).sort()).toEqual(Array(5).fill('test.a_retire'));
  });
});
