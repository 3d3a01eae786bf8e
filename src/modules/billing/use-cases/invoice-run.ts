import type { Logger } from 'pino';
import { setTenant } from '../../../platform/db/database.ts';
import { systemActor, type TenantActorContext } from '../../../platform/http/actor.ts';
import { newId } from '../../../platform/ids.ts';
import { outboxEnvelope } from '../../../platform/outbox/publisher.ts';
import { BILLING_EVENTS } from '../billing.events.ts';
import * as catalog from '../billing.repo.ts';
import type { Meter, Price } from '../billing.repo.ts';
import { locationOf } from '../billing.tax.ts';
import * as run from '../invoice-run.repo.ts';
import type { QueuedPeriod } from '../invoice-run.repo.ts';
import * as repo from '../invoices.repo.ts';
import { asBilling, type Invoice, type InvoiceLine, type ITrx, type TaxSnapshot } from '../invoices.repo.ts';
import type { BillingContext } from './context.ts';
import { chargeLine, chargePriceOf, finalTotals, invoiceNumber, invoicePayload, USAGE_SETTLE_MS, usageLineFrom, usageWindowFor, priceOf, type InvoicingCore } from './invoices.ts';

export interface InvoiceRunResult {
  /** Queued periods settled (invoiced, or found to owe nothing). */
  periods: number;
  invoices: number;
  /** Periods whose org failed alone (counted on the row, retried by the next run). */
  failed: number;
  batches: number;
  /** The run stopped because no queued period was left to claim (not because its time budget ran out). */
  drained: boolean;
}

export interface InvoiceRunUseCases {
  /**
   * The invoice run: invoices queued renewals (`billing_invoice_queue`) in batches of `batchSize` orgs, one
   * transaction per batch, until the queue is empty or `budgetMs` has passed. `tenantId`: that org only.
   */
  runInvoiceQueue(opts?: {
    batchSize?: number;
    budgetMs?: number;
    tenantId?: string;
    parallel?: number;
    /** At most this many periods per second (default: the billing config's `invoiceRunMaxPerSec`; 0: unpaced). */
    maxPerSec?: number;
    logger?: Logger;
    /** Called when a batch has claimed queued periods (the worker renews its hold on background jobs), and with `true` when the run has drained the queue (the hold ends). */
    onBatch?: (done?: boolean) => void;
  }): Promise<InvoiceRunResult>;
  /**
   * Starts draining the queue in this process now, in the background (one drain at a time; a kick during a
   * drain makes it go round again). The worker kicks it when a renewal event arrives, so a period end's
   * renewals are invoiced at once instead of waiting for the schedule's next tick, which a busy job processor
   * delays (every schedule's claim waits for a pooled connection). The schedule stays the safety net.
   */
  kickInvoiceRun(logger?: Logger, onBatch?: (done?: boolean) => void): void;
}

/** Orgs per batch transaction: the customer locks it holds are held until its commit (~100 ms of work here). */
const DEFAULT_BATCH = 200;
/** Batch transactions at once (each holds one pooled connection while it runs; PGlite serializes them). */
const DEFAULT_PARALLEL = 3;

/**
 * The batched invoice run (issue #14's bench: thousands of renewals at a period end). A batch is one
 * transaction on the app role: it claims queued periods across orgs (FOR UPDATE SKIP LOCKED, so several
 * workers share the queue), then, org by org in tenant order, sets the org's tenant context
 * (`set_config('app.tenant_id', org, true)`: RLS binds every statement to that org) and makes its invoice:
 * one statement loads and locks the org's state, one aggregates its usage from the ledger, one writes the
 * finalized invoice (gap-free number, lines, claimed charges, usage cursor), then its two audit records and
 * its `billing.invoice_finalized` event. The invoice is computed in memory by the same functions as the
 * per-event path (`chargeLine`, `usageWindowFor`, `usageLineFrom`, `finalTotals`); an org with a test clock, a
 * credit balance, or a negative total goes through that path itself (`invoicePending`) inside the batch.
 * Prices, meters and tax rates are read once per batch. The claimed rows are marked done in the same
 * transaction: a crash before the commit leaves them queued, and nothing of the batch was written, so a re-run
 * invoices each period once (and a period that was invoiced has no open charges and a moved usage cursor).
 * When a batch fails, each of its orgs runs again alone; one that fails alone has the error counted on its
 * rows (retried up to MAX_QUEUE_ATTEMPTS runs) and does not hold up the others.
 */
export function invoiceRunUseCases(c: BillingContext, core: InvoicingCore): InvoiceRunUseCases {
  const db = c.deps.db;

  interface BatchCache {
    prices: Map<string, Price>;
    meters?: Meter[];
    taxes: Map<string, TaxSnapshot | null>;
  }

  /** An org of the batch on the batched path: its state, the invoice's charge lines and its usage window. */
  interface Planned {
    org: string;
    st: run.OrgInvoicingState;
    invoiceId: string;
    currency: string;
    charges: run.OrgInvoicingState['charges'];
    lines: InvoiceLine[];
    usage?: { sub: NonNullable<run.OrgInvoicingState['subscription']>; price: Price; meter: Meter | undefined; window: repo.UsageWindow };
  }

  /**
   * One org's part of the batch write, its invoice computed from its loaded state and usage aggregate by the
   * same functions as the per-event path; `slow` when the org needs that path (a credit: negative total). No
   * invoice when nothing is owed (its usage cursor still moves). Marks the discount applied (in the org's
   * tenant context).
   */
  async function compose(trx: ITrx, p: Planned, agg: { value: string; events: number; hash: string } | undefined, now: Date, cutoff: Date, cache: BatchCache): Promise<run.BatchWriteItem | 'slow'> {
    const { org, st, invoiceId, currency } = p;
    const sub = st.subscription;
    const lines = [...p.lines];
    let cursor: run.FinalizedInvoiceWrite['cursor'] = null;
    if (p.usage && agg) {
      const { window } = p.usage;
      cursor = { subscriptionId: p.usage.sub.id, metric: window.metric, billedTo: window.to, cutoff };
      const usage = usageLineFrom(invoiceId, p.usage.sub, p.usage.price, p.usage.meter, window, agg);
      if (usage) lines.push(usage);
    }
    if (lines.length === 0) return { org, invoice: null, cursor, audit: [], events: [] };
    lines.forEach((l, i) => (l.position = i + 1));
    const location = locationOf(st.customer.address);
    const taxKey = `${location.country ?? ''}/${location.region ?? ''}`;
    if (!cache.taxes.has(taxKey)) cache.taxes.set(taxKey, await core.tax.rateFor(trx, location));
    const taxRate = cache.taxes.get(taxKey) ?? null;
    const { live, discount, totals } = finalTotals(lines, st.discount, now, taxRate, currency);
    // A credit (negative total) goes to the customer's balance: the per-event path does that.
    if (totals.total < 0) return 'slow';
    lines.forEach((l, i) => Object.assign(l, totals.lines[i]!));
    if ((st.discount && !live) || (live && discount)) {
      await setTenant(trx, org);
      if (st.discount && !live) await repo.markDiscountApplied(trx, org, st.discount.id, false);
      if (live && discount) await repo.markDiscountApplied(trx, org, live.id, live.coupon.duration !== 'once');
    }
    const amountDue = Math.max(0, totals.total);
    const paid = amountDue === 0;
    const customer = { name: st.customer.name, email: st.customer.email, address: st.customer.address, taxId: st.customer.taxId };
    const periodStart = new Date(Math.min(...lines.map((l) => l.periodStart.getTime())));
    const periodEnd = new Date(Math.max(...lines.map((l) => l.periodEnd.getTime())));
    const w: run.FinalizedInvoiceWrite = {
      id: invoiceId, reason: 'subscription_cycle', subscriptionId: sub?.id ?? null, currency, periodStart, periodEnd, usageCutoff: cutoff,
      customer, discount, tax: taxRate, subtotal: totals.subtotal, discountTotal: totals.discountTotal, taxTotal: totals.taxTotal,
      total: totals.total, amountDue, finalizedAt: now, paid, lines, chargeIds: p.charges.map((ch) => ch.id), cursor,
      numberPrefix: invoiceNumber(org, 0).split('-')[0]!,
    };
    // The number, seq and created_at are assigned by the write (the function sets the number into the audit
    // record's changes and the events' payloads): placeholders until then.
    const invoice: Invoice = {
      id: invoiceId, number: '', seq: 0, status: paid ? 'paid' : 'finalized', reason: 'subscription_cycle', subscriptionId: w.subscriptionId,
      currency, periodStart, periodEnd, customer, usageCutoff: cutoff, discount, tax: taxRate, subtotal: totals.subtotal,
      discountTotal: totals.discountTotal, taxTotal: totals.taxTotal, total: totals.total, creditApplied: 0, credited: 0, amountDue,
      amountPaid: 0, attemptCount: 0, nextPaymentAttemptAt: null, pdfKey: null, createdAt: now, finalizedAt: now, paidAt: paid ? now : null,
      voidedAt: null, uncollectibleAt: null, version: 2,
    };
    const ctx: TenantActorContext = { ...systemActor('billing.invoice_run'), tenantId: org };
    const auditRow = (action: string, changes: Record<string, unknown>) =>
      c.deps.audit.pendingRow({ orgId: org, action, target: { type: 'billing_invoice', id: invoiceId }, changes, context: { actor: ctx.actor, requestId: ctx.requestId, ip: ctx.ip } });
    const eventRow = (name: string) => {
      const { envelope } = outboxEnvelope({ name, tenantId: org, payload: invoicePayload(invoice), requestId: ctx.requestId ?? undefined });
      return { id: envelope.id, tenant_id: envelope.tenantId, name, payload: envelope.payload, request_id: envelope.requestId, traceparent: envelope.traceparent, occurred_at: envelope.occurredAt };
    };
    const audit = [
      auditRow('billing.invoice.create', { reason: invoice.reason, lines: lines.length, subtotal: totals.subtotal }),
      auditRow('billing.invoice.finalize', { number: '', total: invoice.total, amountDue }),
    ];
    const events = [eventRow(BILLING_EVENTS.invoiceFinalized), ...(paid ? [eventRow(BILLING_EVENTS.invoicePaid)] : [])];
    return { org, invoice: w, cursor, audit, events };
  }

  /**
   * One batch transaction; returns the periods it claimed (empty: the queue had nothing for it). The steps
   * over the batch's orgs go to Postgres as one call each (migration 0156: each org's statements run in that
   * org's tenant context, under RLS): load and lock, aggregate usage, write invoices + audit + events.
   */
  async function batch(limit: number, tenantId: string | undefined, claimed: { rows: QueuedPeriod[] }, skip: Set<string> = new Set(), onWork?: () => void): Promise<{ periods: number; invoices: number }> {
    return db.app.transaction().execute(async (t) => {
      const trx = core.scope.join(t);
      const rows = await run.claimQueued(trx, limit, tenantId, [...skip]);
      claimed.rows = rows;
      if (rows.length === 0) return { periods: 0, invoices: 0 };
      // The queue has work: the caller holds follow-up work back while this batch runs.
      onWork?.();
      const cache: BatchCache = { prices: new Map(), taxes: new Map() };
      // Tenant order (claimQueued sorts): every batch locks its customers in one order.
      const orgs = [...new Set(rows.map((r) => r.tenantId))];
      const states = await run.loadInvoicingStates(trx, orgs);
      const now = new Date();
      const cutoff = new Date(now.getTime() - USAGE_SETTLE_MS);
      const slow: string[] = [];
      const planned: Planned[] = [];
      for (const org of orgs) {
        const st = states.get(org);
        // No customer row, a test clock or a credit balance: the per-event path, below.
        if (!st || st.hasTestClock || st.hasBalance) {
          slow.push(org);
          continue;
        }
        const sub = st.subscription;
        const invoiceId = newId();
        const currency = sub?.currency ?? st.charges[0]?.currency ?? st.customer.currency;
        const charges = st.charges.filter((ch) => ch.currency === currency);
        const lines: InvoiceLine[] = [];
        for (const ch of charges) lines.push(chargeLine(invoiceId, ch, await chargePriceOf(trx, cache.prices, ch.priceId)));
        const p: Planned = { org, st, invoiceId, currency, charges, lines };
        if (sub) {
          const price = await priceOf(trx, cache.prices, sub.priceId);
          if (price.usageType === 'metered' && price.metric) {
            cache.meters ??= await catalog.listMeters(asBilling(trx));
            const meter = cache.meters.find((m) => m.key === price.metric);
            const window = usageWindowFor(sub, price, meter, st.cursors.get(price.metric), cutoff, now, c.deps.config.usageLateWindowMs);
            if (window) p.usage = { sub, price, meter, window };
          }
        }
        planned.push(p);
      }
      const usage = planned.filter((p) => p.usage);
      const aggs = await run.aggregateUsageBatch(trx, usage.filter((p) => p.usage!.window.aggregation !== 'time_weighted_sum').map((p) => ({ org: p.org, window: p.usage!.window })));
      for (const p of usage.filter((x) => x.usage!.window.aggregation === 'time_weighted_sum')) {
        await setTenant(trx, p.org);
        aggs.set(p.org, await repo.aggregateUsage(trx, p.org, p.usage!.window));
      }
      const items: run.BatchWriteItem[] = [];
      for (const p of planned) {
        const r = await compose(trx, p, aggs.get(p.org), now, cutoff, cache);
        if (r === 'slow') {
          slow.push(p.org);
          continue;
        }
        items.push(r);
      }
      const written = await run.writeBatch(trx, items);
      if (items.some((it) => it.invoice)) c.deps.events.nudge?.();
      const invoiceOf = new Map<string, string | null>();
      for (const it of items) {
        const w = written.get(it.org);
        if (it.invoice && !w) throw new Error(`invoice run: the invoice of org ${it.org} was not written`);
        invoiceOf.set(it.org, w?.invoiceId ?? null);
      }
      // The rest through the per-event path, each in its tenant context (their customers are locked already).
      for (const org of slow.sort()) {
        await setTenant(trx, org);
        const ctx: TenantActorContext = { ...systemActor('billing.invoice_run'), tenantId: org };
        const inv = await core.invoicePending(trx, ctx, 'subscription_cycle', { finalize: true });
        invoiceOf.set(org, inv?.id ?? null);
      }
      await setTenant(trx, '');
      const done = rows.map((r) => ({ ...r, invoiceId: invoiceOf.get(r.tenantId) ?? null }));
      // An org with several queued periods: the invoice covers them all (as before, one invoice per org and batch).
      const invoiced = [...invoiceOf].filter(([, id]) => id !== null).map(([org]) => org);
      await run.markQueueDone(trx, done);
      await run.noteInvoiceOrgs(trx, invoiced, new Date());
      return { periods: rows.length, invoices: invoiced.length };
    });
  }

  /** Paced runs (`maxPerSec`): when this process may start its next batch. */
  let nextBatchAt = 0;
  let draining = false;
  let again = false;

  const service: InvoiceRunUseCases = {
    kickInvoiceRun(logger, onBatch) {
      if (draining) {
        again = true;
        return;
      }
      draining = true;
      setImmediate(async () => {
        try {
          do {
            again = false;
            const r = await service.runInvoiceQueue({ budgetMs: 60_000, logger, onBatch });
            if (r.periods > 0) logger?.info(r, 'invoice run (kicked)');
            if (r.periods > 0) again = true; // until a pass finds the queue empty
          } while (again);
        } catch (err) {
          logger?.warn({ error: (err as Error).message }, 'invoice run (kicked) failed; the schedule goes on');
        } finally {
          draining = false;
        }
      });
    },
    async runInvoiceQueue(opts = {}) {
      // Paced: batches of about a fifth of a second's worth, one at a time, each started no sooner than the
      // process's pace allows, so the run's load is spread instead of bursting.
      const maxPerSec = opts.maxPerSec ?? c.deps.config.invoiceRunMaxPerSec ?? 0;
      const paced = maxPerSec > 0;
      const batchSize = opts.batchSize ?? (paced ? Math.max(10, Math.min(DEFAULT_BATCH, Math.ceil(maxPerSec / 5))) : DEFAULT_BATCH);
      const deadline = Date.now() + (opts.budgetMs ?? 10_000);
      const result: InvoiceRunResult = { periods: 0, invoices: 0, failed: 0, batches: 0, drained: false };
      let drained = false;
      /** Orgs of a failed batch: re-run alone by the loop that had them, not claimed by a batch again in this run. */
      const held = new Set<string>();
      const loop = async () => {
        while (!drained && Date.now() < deadline) {
          if (paced) {
            // The pace is the process's (the schedule's run and a kicked drain share it): each batch reserves
            // its slot, batchSize / rate seconds after the previous one's.
            const at = Math.max(Date.now(), nextBatchAt);
            if (at >= deadline) break;
            nextBatchAt = at + (batchSize / maxPerSec) * 1000;
            if (at > Date.now()) await new Promise((r) => setTimeout(r, at - Date.now()));
          }
          const claimed = { rows: [] as QueuedPeriod[] };
          try {
            const r = await batch(batchSize, opts.tenantId, claimed, held, opts.onBatch);
            if (r.periods === 0) {
              drained = true;
              break;
            }
            result.periods += r.periods;
            result.invoices += r.invoices;
            result.batches++;
          } catch (err) {
            if (claimed.rows.length === 0) throw err;
            // The batch rolled back whole: each of its orgs again, alone, so one bad org holds up nobody.
            const orgs = [...new Set(claimed.rows.map((r) => r.tenantId))];
            for (const org of orgs) held.add(org);
            opts.logger?.warn({ error: (err as Error).message, orgs: orgs.length }, 'invoice run: a batch failed; its orgs run one by one');
            for (const org of orgs) {
              try {
                const r = await batch(batchSize, org, { rows: [] });
                result.periods += r.periods;
                result.invoices += r.invoices;
              } catch (orgErr) {
                result.failed++;
                opts.logger?.error({ orgId: org, error: (orgErr as Error).message }, 'invoice run: an org could not be invoiced; its periods stay queued');
                await db.app.transaction().execute(async (t) => {
                  for (const row of claimed.rows.filter((x) => x.tenantId === org)) await run.markQueueFailed(t, row, (orgErr as Error).message);
                });
              }
            }
            result.batches++;
          }
          if (claimed.rows.length < batchSize) drained = true;
        }
      };
      // Batches side by side (each its own transaction and connection, disjoint rows; every batch locks its orgs
      // in tenant order, so two batches never wait on each other in a cycle): the round trips of one overlap
      // the others' work.
      await Promise.all(Array.from({ length: opts.tenantId || paced ? 1 : Math.max(1, opts.parallel ?? DEFAULT_PARALLEL) }, loop));
      result.drained = drained;
      // The queue is empty: the caller's hold on follow-up work can end now rather than when it lapses.
      if (drained && result.periods > 0) opts.onBatch?.(true);
      return result;
    },
  };
  return service;
}
