import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../config.ts';
import { createTestDatabase, usingPostgres, type TestDatabase } from '../testing/test-db.ts';
import { createEventBus, type EventBus } from './event-bus.ts';

/**
 * A worker in another process (here: another bus on the same Postgres) relays an event as soon as the
 * transaction that added it commits (NOTIFY), not at its next poll: both polls are set to a minute.
 */
describe.runIf(usingPostgres)('relay woken by Postgres NOTIFY', () => {
  let t: TestDatabase;
  const buses: EventBus[] = [];
  beforeAll(async () => {
    t = await createTestDatabase();
  });
  afterAll(async () => {
    for (const b of buses) await b.close();
    await t.drop();
  });

  it('an event added by the API process is handled within a second while the worker polls once a minute', async () => {
    const config = loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent', JOBS_POLL_MS: '60000', JOBS_IDLE_POLL_MS: '60000' });
    const logger = pino({ level: 'silent' });
    const worker = createEventBus({ config, logger, db: t.db });
    const api = createEventBus({ config, logger, db: t.db });
    buses.push(worker, api);
    const handled = new Map<string, number>();
    worker.subscribe('test.wake', 'test.wake_handler', async (e) => void handled.set(e.id, Date.now()));
    await worker.startWorker();
    await new Promise((r) => setTimeout(r, 300)); // the worker's first relay round and its LISTEN are done
    for (let i = 0; i < 3; i++) {
      const committed = await t.db.app.transaction().execute(async (trx) => (await api.add(trx, { name: 'test.wake', payload: { i } })).id);
      const at = Date.now();
      while (!handled.has(committed) && Date.now() - at < 5_000) await new Promise((r) => setTimeout(r, 10));
      expect(handled.get(committed)! - at).toBeLessThan(1_000);
    }
  });
});
