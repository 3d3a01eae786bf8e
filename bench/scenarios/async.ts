import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { mapLimit } from '../lib/api.ts';
import { runLoad } from '../lib/load.ts';
import { DEFAULT_PG } from '../lib/env.ts';
import { findExport } from '../lib/find-export.ts';
import { measureOutbox } from '../lib/outbox-bench.ts';
import { ROOT } from '../lib/processes.ts';
import { round } from '../lib/stats.ts';
import { skipped, target, type Scenario } from '../lib/types.ts';
import { pickCachedRead } from './fixtures.ts';
import { pickCreate } from './writes.ts';

/**
 * Outbox throughput (as fast as possible) and outbox→handler latency at a fixed 1,000 events/s,
 * through the async module's own `runOutboxBench` against this run's database and Redis.
 */
export const outbox: Scenario = {
  name: 'outbox',
  title: 'Outbox throughput and outbox→handler latency',
  async run(ctx) {
    const p6 = (tput?: number, p95?: number) => [
      target('P6a', 'outbox ≥ 5,000 events/s', tput, 5000, '/s', '>='),
      target('P6b', 'outbox→handler p95 < 100 ms at 1,000 events/s', p95, 100, 'ms', '<'),
    ];
    const file = findExport('runOutboxBench');
    if (file) {
      // The async module's own benchmark: a throughput phase, then a fixed 1,000 events/s latency phase.
      const mod = (await import(pathToFileURL(file).href)) as { runOutboxBench: (o: Record<string, unknown>) => Promise<any> };
      ctx.log(`outbox: runOutboxBench from ${path.relative(ROOT, file)}`);
      const r = await mod.runOutboxBench({
        databaseUrl: DEFAULT_PG, redisUrl: ctx.env.redisUrl, throughputEvents: 10_000, rate: 1000, durationMs: ctx.opts.durationSec * 1000,
      });
      const tput = Number(r?.throughput?.eventsPerSec ?? r?.eventsPerSec);
      const p95 = Number(r?.latency?.p95Ms ?? r?.latencyMs?.p95);
      return {
        name: this.name, title: this.title, status: 'ok', endpoint: `runOutboxBench (${path.relative(ROOT, file)}, ${r?.transport ?? '?'} on ${r?.database ?? '?'})`,
        metrics: {
          eventsPerSec: round(tput, 1), p50MsAt1000: round(Number(r?.latency?.p50Ms)), p95MsAt1000: round(p95), p99MsAt1000: round(Number(r?.latency?.p99Ms)),
          raw: JSON.stringify(r).slice(0, 500),
        },
        targets: p6(tput, p95),
      };
    }
    if (!findExport('createEventBus')) return skipped(this, 'async backbone (outbox + event bus) not available', p6());
    const common = { baseDatabaseUrl: DEFAULT_PG, redisUrl: ctx.env.redisUrl, redisPrefix: `${ctx.env.redisPrefix}outbox:` };
    ctx.log('outbox: 10,000 events as fast as possible');
    const max = await measureOutbox({ ...common, events: 10_000, durationSec: ctx.opts.durationSec });
    ctx.log(`outbox: ${max.eventsPerSec} events/s; now 1,000 events/s for ${ctx.opts.durationSec} s`);
    const paced = await measureOutbox({ ...common, rate: 1000, durationSec: ctx.opts.durationSec });
    return {
      name: this.name, title: this.title, status: 'ok',
      endpoint: 'event bus: add() in a transaction → relay → BullMQ → subscribed handler (bench/lib/outbox-bench.ts)',
      metrics: {
        eventsPerSec: max.eventsPerSec, handledOfSent: `${max.handled}/${max.events}`, p95MsAtMax: max.latencyMs.p95,
        p50MsAt1000: paced.latencyMs.p50, p95MsAt1000: paced.latencyMs.p95, p99MsAt1000: paced.latencyMs.p99,
        handledOfSentAt1000: `${paced.handled}/${paced.events}`,
      },
      targets: p6(max.eventsPerSec, paced.handled === paced.events ? paced.latencyMs.p95 : Number.POSITIVE_INFINITY),
    };
  },
};

/**
 * Read latency with and without a heavy batch of background work: the same fixed-rate read load
 * twice, the second time while a writer floods creates (each one an outbox event → jobs).
 */
export const jobOverlap: Scenario = {
  name: 'job-overlap',
  title: 'Job overlap: reads at peak during a heavy job batch',
  async run(ctx) {
    if (!findExport('createEventBus')) {
      return skipped(this, 'async backbone (outbox + jobs) not available');
    }
    const pick = await pickCachedRead(ctx);
    const write = await pickCreate(ctx);
    if (!pick || !write) return skipped(this, 'no read or create endpoint available');
    const probe = await runLoad({ baseUrl: ctx.api.baseUrl, request: pick.request, durationSec: 2, connections: ctx.opts.connections });
    const rate = Math.max(20, Math.round(probe.okPerSec * 0.4));
    const shape = { baseUrl: ctx.api.baseUrl, request: pick.request, durationSec: ctx.opts.durationSec, connections: 20, rate };
    const alone = await runLoad(shape);
    let stop = false;
    let written = 0;
    const t0 = Date.now();
    const t = ctx.fixtures.tenant!;
    const writer = mapLimit(Array.from({ length: 16 }), 16, async () => {
      while (!stop) {
        const res = await ctx.client.call('POST', write.path, {
          token: t.token, body: write.body(), headers: { 'idempotency-key': crypto.randomUUID() },
        }).catch(() => undefined);
        if (res && res.status < 300) written++;
      }
    });
    const during = await runLoad(shape);
    stop = true;
    await writer;
    const writesPerSec = round(written / ((Date.now() - t0) / 1000), 1);
    return {
      name: this.name, title: this.title, status: 'ok', endpoint: `${pick.endpoint} + ${write.endpoint}`,
      load: during, phases: { alone, during },
      metrics: { readRate: rate, writesPerSec, p95Alone: alone.latencyMs.p95, p95During: during.latencyMs.p95,
        p95Ratio: round(during.latencyMs.p95 / Math.max(0.01, alone.latencyMs.p95)) },
      targets: [],
    };
  },
};

/** Written in its own file (the reporting module's scenario). */
export { exportAtPeak } from './export-at-peak.ts';
