// Outbox → handler benchmark, for both transports. Callable (runOutboxBench) or standalone:
//   tsx bench/outbox.ts                         embedded: PGlite + in-process transport
//   TEST_DATABASE_URL=postgres://… TEST_REDIS_URL=redis://… tsx bench/outbox.ts   Postgres + BullMQ
// Uses a throwaway database and a unique Redis key prefix; nothing else is touched.
import { randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { loadConfig } from '../src/platform/config.ts';
import { openDatabase } from '../src/platform/db/database.ts';
import { newId } from '../src/platform/ids.ts';
import { createEventBus } from '../src/platform/outbox/event-bus.ts';
import { createTestDatabase } from '../src/platform/testing/test-db.ts';
import { Redis } from 'ioredis';

export interface OutboxBenchOptions {
  /** Postgres owner URL for the throwaway database's server; PGlite when absent. */
  databaseUrl?: string;
  /** Redis URL: BullMQ transport when set, in-process otherwise. */
  redisUrl?: string;
  /** Events for the throughput phase (published as fast as possible). */
  throughputEvents?: number;
  /** Fixed publish rate for the latency phase, events/s, and its duration. */
  rate?: number;
  durationMs?: number;
  concurrency?: number;
  poolMax?: number;
  /**
   * Subscribe the bench's handler `batchSafe` (default true: it only counts, so it is): batches then run
   * without a savepoint per handler. false measures the savepoint path a handler with outside effects takes.
   */
  batchSafe?: boolean;
}

export interface OutboxBenchResult {
  transport: 'in-process' | 'bullmq';
  database: 'pglite' | 'postgres';
  throughput: { events: number; ms: number; eventsPerSec: number };
  latency: { rate: number; events: number; failedToPublish: number; p50Ms: number; p95Ms: number; p99Ms: number; maxMs: number };
}

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runOutboxBench(opts: OutboxBenchOptions = {}): Promise<OutboxBenchResult> {
  const prefix = `plinth-bench:${randomBytes(4).toString('hex')}:`;
  const config = loadConfig({
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    REDIS_PREFIX: prefix,
    JOBS_CONCURRENCY: String(opts.concurrency ?? 16),
    JOBS_POLL_MS: '20',
    DATABASE_POOL_MAX: String(opts.poolMax ?? 20),
    ...(opts.redisUrl ? { REDIS_URL: opts.redisUrl } : {}),
  });
  const previous = process.env.TEST_DATABASE_URL;
  if (opts.databaseUrl) process.env.TEST_DATABASE_URL = opts.databaseUrl;
  else delete process.env.TEST_DATABASE_URL;
  const testDb = await createTestDatabase({ poolMax: opts.poolMax ?? 20 });
  if (previous === undefined) delete process.env.TEST_DATABASE_URL;
  else process.env.TEST_DATABASE_URL = previous;

  // As deployed, the producers (the API) and the worker are separate processes with a pool each: on one
  // shared pool, a 1,000/s stream of producer transactions would queue the relay and the handlers behind it.
  const workerDb = testDb.url ? await openDatabase({ databaseUrl: testDb.url, poolMax: opts.poolMax ?? 20 }) : testDb.db;
  const bus = createEventBus({ config, logger: pino({ level: 'silent' }), db: workerDb });
  const tenant = newId();
  let phase: 'throughput' | 'latency' = 'throughput';
  let handled = 0;
  const latencies: number[] = [];
  bus.subscribe('bench.happened', 'bench.consumer', async (event) => {
    handled++;
    if (phase === 'latency') latencies.push(Date.now() - Date.parse(event.occurredAt));
  }, { batchSafe: opts.batchSafe ?? true });
  await bus.startWorker();
  const waitHandled = async (n: number, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    while (handled < n) {
      if (Date.now() > deadline) throw new Error(`only ${handled}/${n} events handled within ${timeoutMs} ms`);
      await sleep(5);
    }
  };

  try {
    // Throughput: producers in parallel, 50 events per transaction, until every event is handled.
    const total = opts.throughputEvents ?? 10_000;
    const started = Date.now();
    const producers = 4;
    await Promise.all(
      Array.from({ length: producers }, async (_, p) => {
        for (let i = p * 50; i < total; i += producers * 50) {
          await testDb.db.withTenant(tenant, async (trx) => {
            for (let j = i; j < Math.min(total, i + 50); j++) await bus.add(trx, { name: 'bench.happened', tenantId: tenant, payload: { j } });
          });
        }
      }),
    );
    await waitHandled(total, 120_000);
    const ms = Date.now() - started;

    // Latency at a fixed rate: one event per transaction (as a request would), paced every 10 ms.
    phase = 'latency';
    const rate = opts.rate ?? 1_000;
    const duration = opts.durationMs ?? 5_000;
    const base = handled;
    const perTick = Math.max(1, Math.round(rate / 100));
    const ticks = Math.round(duration / 10);
    const t0 = Date.now();
    const inflight: Promise<unknown>[] = [];
    let failed = 0;
    for (let t = 0; t < ticks; t++) {
      for (let k = 0; k < perTick; k++) {
        // A producer transaction that cannot get a connection in time (an overloaded machine) is counted,
        // not left as an unhandled rejection that kills the run.
        inflight.push(testDb.db.withTenant(tenant, (trx) => bus.add(trx, { name: 'bench.happened', tenantId: tenant, payload: { t, k } })).catch(() => void failed++));
      }
      const next = t0 + (t + 1) * 10;
      await sleep(Math.max(0, next - Date.now()));
    }
    await Promise.all(inflight);
    await waitHandled(base + ticks * perTick - failed, 60_000);
    const sorted = [...latencies].sort((a, b) => a - b);
    return {
      transport: config.redisUrl ? 'bullmq' : 'in-process',
      database: testDb.kind,
      throughput: { events: total, ms, eventsPerSec: Math.round((total / ms) * 1000) },
      latency: { rate, events: sorted.length, failedToPublish: failed, p50Ms: pct(sorted, 50), p95Ms: pct(sorted, 95), p99Ms: pct(sorted, 99), maxMs: sorted.at(-1) ?? NaN },
    };
  } finally {
    await bus.close();
    if (workerDb !== testDb.db) await workerDb.close();
    if (opts.redisUrl) {
      const r = new Redis(opts.redisUrl);
      const keys = await r.keys(`${prefix}*`);
      if (keys.length) await r.del(...keys);
      r.disconnect();
    }
    await testDb.drop();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const result = await runOutboxBench({
    databaseUrl: process.env.TEST_DATABASE_URL, redisUrl: process.env.TEST_REDIS_URL, batchSafe: process.env.OUTBOX_BENCH_BATCH_SAFE !== 'false',
    ...(process.env.OUTBOX_BENCH_EVENTS ? { throughputEvents: Number(process.env.OUTBOX_BENCH_EVENTS) } : {}),
  });
  console.log(JSON.stringify(result, null, 2));
}
