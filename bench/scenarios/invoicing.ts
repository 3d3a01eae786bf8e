import os from 'node:os';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { newId } from '../../src/platform/ids.ts';
import { measureCpuFloor } from '../lib/cpu-floor.ts';
import { runLoad } from '../lib/load.ts';
import { cpuSecSince, cpuSnapshot, type CpuSnapshot } from '../lib/processes.ts';
import { round } from '../lib/stats.ts';
import { skipped, target, type Scenario } from '../lib/types.ts';
import { pickCachedRead } from './fixtures.ts';

/**
 * Invoice run (issue #14): N subscriptions (default 10,000; BENCH_INVOICES) on a metered price, each with a
 * period charge and 10 usage events of the period that just ended, renew at once: one
 * `billing.subscription_updated` (renewed) event each and its queued period (`billing_invoice_queue`), as the
 * renewal schedule writes them. The API's worker invoices them — the batched invoice run (`billing.invoice_run`;
 * before it, the event's handler): lines from the charges, usage aggregated from the ledger, tax/discount,
 * gap-free number, finalization — measured as finalized invoices per second — while the cached read runs
 * alongside, its p99 compared with the same read just before (I2). As in export-at-peak (R2), the concurrent
 * read is offered at a fixed rate, 40 % of what it reached alone at saturation just before, evenly spaced
 * (`pacing: 'uniform'`) over the run's first seconds: a saturated closed loop has no spare CPU by definition,
 * so its p99 grows with any work beside it, and on this 2-core machine the API, the load generator, the
 * worker and Postgres share two cores. The saturated read is measured too, before and during the next
 * seconds of the run (`saturatedReadP99Change`, reported, not a target). Payment collection runs too (the orgs
 * have no payment method: each first attempt fails without a gateway call and enters dunning).
 */
export const invoiceRun: Scenario = {
  name: 'invoice-run',
  title: 'Invoice run: 10,000 metered subscriptions renewed at once, invoiced through the outbox (cached reads alongside)',
  async run(ctx) {
    const targets = (perSec?: number, p99Change?: number) => [
      target('I1', 'invoices finalized ≥ 500/s', perSec, 500, '/s', '>='),
      target('I2', 'cached-read p99 during the run ≤ 1.20× before (offered at 40 % of its capacity, as R2)', p99Change, 1.2, '×', '<='),
    ];
    if (!ctx.client.has('GET', '/v1/orgs/{orgId}/billing/invoices')) return skipped(this, 'no invoices in this build', targets());
    const pick = await pickCachedRead(ctx);
    if (!pick) return skipped(this, 'no cached read to run alongside', targets());
    const n = Number(process.env.BENCH_INVOICES ?? 10_000);
    const db = new pg.Client({ connectionString: ctx.env.databaseUrl });
    await db.connect();
    try {
      ctx.log(`invoice-run: seeding ${n} subscriptions with usage`);
      const now = Date.now();
      const periodStart = new Date(now - 86_400_000);
      const anchor = new Date(periodStart.getTime() - 31 * 86_400_000);
      const periodEnd = new Date(periodStart.getTime() + 30 * 86_400_000);
      const productId = newId();
      const planId = newId();
      const priceId = newId();
      const suffix = randomUUID().slice(0, 8);
      await db.query(`insert into billing_products (id, key, name) values ($1, $2, 'Bench')`, [productId, `bench-${suffix}`]);
      await db.query(`insert into billing_plans (id, product_id, key, name, rank) values ($1, $2, $3, 'Bench metered', 5)`, [planId, productId, `bench-${suffix}`]);
      await db.query(`insert into billing_prices (id, plan_id, version, currency, interval, usage_type, model, unit_amount, flat_amount, metric) values ($1, $2, 1, 'USD', 'month', 'metered', 'per_unit', 3, 0, 'bench.calls')`, [priceId, planId]);
      await db.query(`insert into billing_meters (key, name, aggregation) values ('bench.calls', 'Bench calls', 'sum') on conflict (key) do nothing`);
      const orgs = Array.from({ length: n }, () => newId());
      const CHUNK = 2_000;
      for (let i = 0; i < orgs.length; i += CHUNK) {
        const ids = orgs.slice(i, i + CHUNK);
        await db.query('begin');
        await db.query(`insert into billing_customers (tenant_id, id, currency, email) select t, t, 'USD', null from unnest($1::uuid[]) t`, [ids]);
        await db.query(
          `insert into billing_subscriptions (tenant_id, id, plan_id, price_id, status, quantity, currency, interval, anchor_at, current_period_start, current_period_end)
           select t, t, $2, $3, 'active', 1, 'USD', 'month', $4, $5, $6 from unnest($1::uuid[]) t`,
          [ids, planId, priceId, anchor, periodStart, periodEnd],
        );
        // A licensed charge of the new period (as Billing I writes at renewal) beside the metered usage.
        await db.query(
          `insert into billing_charges (tenant_id, id, subscription_id, kind, amount, currency, quantity, price_id, description, period_start, period_end)
           select t, gen_random_uuid(), t, 'subscription', 2000, 'USD', 1, $2, 'Platform fee', $3, $4 from unnest($1::uuid[]) t`,
          [ids, priceId, periodStart, periodEnd],
        );
        await db.query(
          `insert into billing_usage_events (tenant_id, key, metric, occurred_at, value, received_at)
           select t, 'e' || g, 'bench.calls', $2::timestamptz + g * interval '1 day', 1 + g, now() - interval '1 hour'
           from unnest($1::uuid[]) t cross join generate_series(1, 10) g`,
          [ids, anchor],
        );
        await db.query('commit');
      }
      // As setup: autovacuum would otherwise vacuum the 100,000 usage events and 10,000 subscriptions just
      // written (an insert-triggered vacuum) during the run.
      await db.query('vacuum (analyze)');

      ctx.log('invoice-run: cached read before the run');
      await runLoad({ baseUrl: ctx.api.baseUrl, request: pick.request, durationSec: 1, connections: ctx.opts.connections });
      const saturatedBefore = await runLoad({ baseUrl: ctx.api.baseUrl, request: pick.request, durationSec: ctx.opts.durationSec, connections: ctx.opts.connections });
      const readShape = {
        baseUrl: ctx.api.baseUrl, request: pick.request, durationSec: ctx.opts.durationSec, connections: 20,
        rate: Math.max(20, Math.round(saturatedBefore.okPerSec * 0.4)), pacing: 'uniform' as const,
        // A second at the rate, unrecorded, opens the connections; "during" publishes the renewals when its
        // measured part begins (as export-at-peak starts its export).
        warmupSec: 1,
      };
      const before = await runLoad(readShape);
      // I2's floor: the same read again with nothing beside it (A/A: the measure's own spread), then while Postgres
      // burns a quarter and half a core doing nothing else.
      ctx.log('invoice-run: the read beside a Postgres CPU burner (the floor)');
      const floor = await measureCpuFloor(ctx.env.databaseUrl, [readShape], [before], [0, 0.25, 0.5]);

      // Builds before the invoice run (migration 0155) invoice each renewal in its event's handler instead.
      const queue = (await db.query(`select to_regclass('billing_invoice_queue') is not null as q`)).rows[0].q as boolean;
      const finalized = async () => Number((await db.query(`select count(*) as n from billing_invoices where status <> 'draft' and tenant_id = any($1::uuid[])`, [orgs])).rows[0].n);
      const payload = (t: string) => JSON.stringify({ subscriptionId: t, status: 'active', planId, planKey: `bench-${suffix}`, priceId, interval: 'month', quantity: 1, amountMinor: null, currency: 'USD', currencyExponent: 2, change: 'renewed', previousStatus: 'active', currentPeriodEnd: periodEnd.toISOString() });
      // With --worker the invoice run (and its follow-ups) runs in the worker's process: both are measured.
      let cpuStart: CpuSnapshot | undefined;
      const publish = async () => {
        cpuStart = cpuSnapshot({ api: ctx.api.pid, worker: ctx.worker?.pid }, ctx.env.databaseName);
        for (let i = 0; i < orgs.length; i += CHUNK) {
          const ids = orgs.slice(i, i + CHUNK);
          // As the renewal writes them, in one transaction: its event and (since migration 0155) its queued period.
          await db.query('begin');
          await db.query(`insert into outbox (id, tenant_id, name, payload) select id, t, 'billing.subscription_updated', p::jsonb from unnest($1::uuid[], $2::uuid[], $3::text[]) as x(id, t, p)`, [
            ids.map(() => newId()),
            ids,
            ids.map(payload),
          ]);
          if (queue) await db.query(`insert into billing_invoice_queue (tenant_id, subscription_id, period_end) select t, t, $2 from unnest($1::uuid[]) t`, [ids, periodEnd]);
          await db.query('commit');
        }
        await db.query(`notify plinth_outbox`).catch(() => {});
        ctx.log(`invoice-run: ${n} renewals published`);
      };
      let publishing: Promise<void> | undefined;
      const during = await runLoad({
        ...readShape,
        onMeasuring: () => {
          publishing = publish();
          publishing.catch(() => undefined); // awaited below
        },
      });
      if (!publishing || !cpuStart) throw new Error('the renewals were never published');
      await publishing;
      const started = cpuStart.at;
      const saturatedDuring = await runLoad({ baseUrl: ctx.api.baseUrl, request: pick.request, durationSec: ctx.opts.durationSec, connections: ctx.opts.connections });
      const saturatedDuringEndSec = (Date.now() - started) / 1000;
      const deadline = Date.now() + Number(process.env.BENCH_INVOICE_TIMEOUT_SEC ?? 600) * 1000;
      let done = await finalized();
      while (done < n && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 250));
        done = await finalized();
      }
      const seconds = (Date.now() - started) / 1000;
      // On a shared machine throughput follows the load; the API's CPU per invoice much less (the reads run
      // meanwhile, and the finalized invoices' follow-up jobs — collection, PDF, webhooks — are included).
      const { api: apiCpuSec, worker: workerCpuSec, postgres: pgCpuSec } = cpuSecSince(cpuStart);
      const perSec = round(done / seconds, 1);
      const p99Change = before.okLatencyMs.p99 > 0 ? round(during.okLatencyMs.p99 / before.okLatencyMs.p99, 3) : undefined;
      // The timeline: how long the run took to start (relay and fan-out before the first invoice) and to finish.
      const span = (await db.query(`select extract(epoch from min(finalized_at)) * 1000 as first, extract(epoch from max(finalized_at)) * 1000 as last from billing_invoices where tenant_id = any($1::uuid[])`, [orgs])).rows[0];
      const sample = (await db.query(`select total, subtotal, (select count(*) from billing_invoice_lines l where l.tenant_id = i.tenant_id and l.invoice_id = i.id) as lines from billing_invoices i where tenant_id = $1`, [orgs[0]])).rows[0];
      return {
        name: this.name,
        title: this.title,
        status: done === n ? 'ok' : 'error',
        endpoint: queue ? 'billing_invoice_queue → billing.invoice_run (batched)' : 'outbox: billing.subscription_updated (renewed) → billing.invoice_on_updated',
        load: during,
        phases: { readsBefore: before, readsDuring: during, saturatedReadsBefore: saturatedBefore, saturatedReadsDuring: saturatedDuring },
        metrics: {
          subscriptions: n,
          invoicesFinalized: done,
          seconds: round(seconds, 1),
          invoicesPerSec: perSec,
          apiCpuSec: apiCpuSec ?? 'n/a',
          apiCpuMsPerInvoice: apiCpuSec !== undefined && done > 0 ? round((apiCpuSec * 1000) / done, 2) : 'n/a',
          workerCpuSec: workerCpuSec ?? 'n/a (no --worker)',
          postgresCpuSec: pgCpuSec,
          postgresCpuMsPerInvoice: done > 0 ? round((pgCpuSec * 1000) / done, 2) : 'n/a',
          workerCpuMsPerInvoice: workerCpuSec !== undefined && done > 0 ? round((workerCpuSec * 1000) / done, 2) : 'n/a',
          firstInvoiceAfterSec: span?.first ? round((Number(span.first) - started) / 1000, 2) : 'n/a',
          lastInvoiceAfterSec: span?.last ? round((Number(span.last) - started) / 1000, 2) : 'n/a',
          loadAverage: os.loadavg().map((x) => round(x, 2)).join(' '),
          readP99BeforeMs: before.okLatencyMs.p99,
          readP99DuringMs: during.okLatencyMs.p99,
          readP99Change: p99Change ?? 'n/a',
          readRatePerSec: readShape.rate,
          readP99ChangeFloor: Object.entries(floor).map(([k, v]) => `${v} ${k}`).join(', '),
          saturatedReadP99BeforeMs: saturatedBefore.okLatencyMs.p99,
          saturatedReadP99DuringMs: saturatedDuring.okLatencyMs.p99,
          saturatedReadP99Change: saturatedBefore.okLatencyMs.p99 > 0 ? round(saturatedDuring.okLatencyMs.p99 / saturatedBefore.okLatencyMs.p99, 3) : 'n/a',
          saturatedReadWindow: `${round(saturatedDuringEndSec - ctx.opts.durationSec, 1)}-${round(saturatedDuringEndSec, 1)} s after publish (the run ${span?.last ? `ended at ${round((Number(span.last) - started) / 1000, 1)} s` : 'had not ended'})`,
          sampleInvoice: sample ? `${sample.lines} lines, subtotal ${sample.subtotal}, total ${sample.total}` : 'none',
        },
        targets: targets(perSec, p99Change),
      };
    } finally {
      await db.end();
    }
  },
};
