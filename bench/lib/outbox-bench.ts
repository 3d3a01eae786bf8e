import { randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { pino } from 'pino';
import { loadConfig } from '../../src/platform/config.ts';
import { openDatabase } from '../../src/platform/db/database.ts';
import { migrate } from '../../src/platform/migrate/migrator.ts';
import { deleteRedisPrefix } from './env.ts';
import { findExport } from './find-export.ts';
import { sleep } from './processes.ts';
import { percentiles, round } from './stats.ts';

export interface OutboxBenchResult {
  events: number;
  eventsPerSec: number;
  latencyMs: { p50: number; p95: number; p99: number; max: number; mean: number };
  handled: number;
}

/**
 * Outbox → handler measurement through the event bus's public API (`add` in a transaction, `subscribe`,
 * `startWorker`: relay → BullMQ → consumer with its processed-event record). Runs on its own
 * throwaway database so no other process's relay sees these rows. Used when the async module does
 * not export its own `runOutboxBench`.
 */
export async function measureOutbox(opts: {
  baseDatabaseUrl: string;
  redisUrl: string;
  redisPrefix: string;
  /** Unset: as fast as possible (throughput); set: events per second (latency at that rate). */
  rate?: number;
  events?: number;
  durationSec: number;
}): Promise<OutboxBenchResult> {
  const file = findExport('createEventBus');
  if (!file) throw new Error('createEventBus not available');
  const { createEventBus } = (await import(pathToFileURL(file).href)) as { createEventBus: (deps: any) => any };
  const name = `plinth_bench_outbox_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  const admin = new pg.Client({ connectionString: opts.baseDatabaseUrl });
  await admin.connect();
  await admin.query(`create database ${name}`);
  const url = new URL(opts.baseDatabaseUrl);
  url.pathname = `/${name}`;
  const prefix = `${opts.redisPrefix}${randomBytes(3).toString('hex')}:`;
  const db = await openDatabase({ databaseUrl: url.toString(), poolMax: 10 });
  let bus: any;
  try {
    await migrate(db.owner, { kind: db.kind });
    const config = loadConfig({ NODE_ENV: 'production', DATABASE_URL: url.toString(), REDIS_URL: opts.redisUrl, REDIS_PREFIX: prefix, LOG_LEVEL: 'silent' });
    bus = createEventBus({ config, logger: pino({ level: 'silent' }), db });
    const latencies: number[] = [];
    let handled = 0;
    let lastHandledAt = 0;
    bus.subscribe('bench.ping', 'bench.outbox', async (event: { payload: { t: number } }) => {
      const now = Date.now();
      latencies.push(now - event.payload.t);
      handled++;
      lastHandledAt = now;
    });
    await bus.startWorker();
    const add = (n: number) =>
      db.app.transaction().execute(async (trx) => {
        const t = Date.now();
        for (let i = 0; i < n; i++) await bus.add(trx, { name: 'bench.ping', tenantId: null, payload: { t } });
      });
    const started = Date.now();
    let sent = 0;
    if (opts.rate) {
      // 10 commits a second, each carrying a tenth of the rate, for durationSec.
      const perTick = Math.max(1, Math.round(opts.rate / 10));
      const end = started + opts.durationSec * 1000;
      for (let tick = 0; Date.now() < end; tick++) {
        await add(perTick);
        sent += perTick;
        await sleep(Math.max(0, started + (tick + 1) * 100 - Date.now()));
      }
    } else {
      const total = opts.events ?? 10_000;
      const inFlight: Promise<void>[] = [];
      for (let i = 0; i < total; i += 100) {
        inFlight.push(add(Math.min(100, total - i)));
        if (inFlight.length >= 8) await inFlight.shift();
        sent += Math.min(100, total - i);
      }
      await Promise.all(inFlight);
    }
    const deadline = Date.now() + 60_000;
    while (handled < sent && Date.now() < deadline) await sleep(20);
    const elapsed = ((lastHandledAt || Date.now()) - started) / 1000;
    const p = percentiles(latencies);
    return {
      events: sent,
      handled,
      eventsPerSec: round(handled / Math.max(0.001, elapsed), 1),
      latencyMs: { p50: round(p.p50), p95: round(p.p95), p99: round(p.p99), max: round(p.max), mean: round(p.mean) },
    };
  } finally {
    await bus?.close().catch(() => undefined);
    await db.close();
    await admin.query(`drop database if exists ${name} with (force)`).catch(() => undefined);
    await admin.end();
    await deleteRedisPrefix(opts.redisUrl, prefix).catch(() => 0);
  }
}
