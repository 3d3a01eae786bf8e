import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { systemActor, type TenantActorContext } from '../../platform/http/actor.ts';
import { newId } from '../../platform/ids.ts';

/**
 * Invoice logic on the embedded database, fast (no worker, the service called directly), so `npm test` covers it;
 * billing.invoices.test.ts runs the same logic end to end over HTTP and the worker on Postgres.
 *
 * The batched invoice run (use-cases/invoice-run.ts): Renewals by the wall clock queue their period; one run invoices every queued org in one batch
 * transaction, each org under its own tenant context. The invoices must be what the per-event path makes
 * (compared line by line with a twin org invoiced that way) and recompute identically (`verifyInvoices`);
 * numbers stay gap-free after earlier invoices; an org that fails does not hold up the others and stays
 * queued; a second run, a redelivered renewal event, or a re-queued period invoices nothing twice.
 */
describe('billing invoices, embedded: on demand, drafts, credit notes, numbers, verify, the batched invoice run', () => {
  let t: TestPlatform;
  let statements = 0;
  const admin = systemActor('test.admin');
  const ctx = (orgId: string): TenantActorContext => ({ ...systemActor('test'), tenantId: orgId });
  const ids: Record<string, string> = {};
  /** Every org's period started at the same instant (40 days ago), so twins have the same windows. */
  const start = new Date(Math.floor(Date.now() / 1000) * 1000 - 40 * 86_400_000);

  beforeAll(async () => {
    t = await createTestPlatform({ env: { LOG_LEVEL: 'silent' }, db: { onQuery: () => void statements++ } });
    const b = t.modules.billing;
    const product = await b.createProduct(admin, { key: 'run', name: 'Run' });
    const metered = await b.createPlan(admin, { productId: product.id, key: 'run-metered', name: 'Metered', rank: 5 });
    await b.upsertMeter(admin, { key: 'run.calls', name: 'Calls', aggregation: 'sum', property: null });
    await b.addPrice(admin, metered.id, { currency: 'USD', interval: 'month', model: 'tiered', usageType: 'metered', metric: 'run.calls', tiers: [{ upTo: 20, unitAmount: 10, flatAmount: 0 }, { upTo: null, unitAmount: 4, flatAmount: 0 }] });
    const flat = await b.createPlan(admin, { productId: product.id, key: 'run-flat', name: 'Flat', rank: 6 });
    await b.addPrice(admin, flat.id, { currency: 'USD', interval: 'month', model: 'flat', flatAmount: 5000 });
    await b.createTaxRate(admin, { country: 'DE', name: 'USt', percentage: 19 });
    const coupon = await b.createCoupon(admin, { key: 'run-forever', name: '15 % forever', percentOff: 15, duration: 'forever' });
    await b.createPromotionCode(admin, { code: 'RUN15', couponId: coupon.id });
    ids.metered = metered.id;
    ids.flat = flat.id;
  });
  afterAll(async () => {
    await t?.close();
  });

  /** An org subscribed by the wall clock 40 days ago, whose renewal is due now. */
  async function org(planId: string, opts: { coupon?: boolean } = {}): Promise<string> {
    const b = t.modules.billing;
    const orgId = newId();
    await b.updateCustomer(ctx(orgId), { email: `run-${orgId.slice(-6)}@example.com`, currency: 'USD', address: { country: 'DE' } });
    if (opts.coupon) await b.redeemPromotionCode(ctx(orgId), 'RUN15');
    await b.subscribe(ctx(orgId), { planId, trial: false });
    await t.db.withTenant(orgId, async (trx) => {
      await sql`update billing_subscriptions set anchor_at = ${start}, current_period_start = ${start},
        current_period_end = ${start}::timestamptz + interval '1 month' where tenant_id = ${orgId}`.execute(trx);
      await sql`update billing_charges set period_start = ${start}, period_end = ${start}::timestamptz + interval '1 month' where tenant_id = ${orgId}`.execute(trx);
    });
    return orgId;
  }

  /** 12 usage events of the period that just ended (the same keys, times and values for every org). */
  async function usage(orgId: string): Promise<void> {
    await t.db.withTenant(orgId, (trx) =>
      sql`insert into billing_usage_events (tenant_id, key, metric, occurred_at, value, received_at)
          select ${orgId}::uuid, 'e' || g, 'run.calls', ${start}::timestamptz + g * interval '1 day', g, now() - interval '1 hour'
          from generate_series(1, 12) g`.execute(trx),
    );
  }

  const invoicesOf = (orgId: string) => t.modules.billing.listInvoices(orgId, { limit: 50 });
  const queued = async (orgId: string) =>
    (await sql<{ n: number; attempts: number }>`select count(*)::int as n, coalesce(max(attempts), 0)::int as attempts from billing_invoice_queue where tenant_id = ${orgId} and done_at is null`.execute(t.db.owner)).rows[0]!;
  const strip = (l: any) => {
    const { id: _id, invoiceId: _inv, subscriptionId: _sub, computation, ...rest } = l;
    const { cutoff: _c, ...u } = computation.usage ?? {};
    return { ...rest, computation: { ...computation, usage: computation.usage ? u : undefined } };
  };

  it('on demand: coupon and exclusive tax, number 1; drafts get no number; credit notes, credit balance, void, delete; concurrent finalizations gap-free; verify catches a tampered line', async () => {
    const b = t.modules.billing;
    const o = await org(ids.flat!, { coupon: true });
    const first = await b.createInvoice(ctx(o), {});
    // 5000 − 15 % = 4250, + 19 % = 807.5 → 808 (half away from zero).
    expect(first).toMatchObject({ status: 'finalized', reason: 'manual', subtotal: 5000, discountTotal: 750, taxTotal: 808, total: 5058, amountDue: 5058 });
    expect(first.number).toMatch(/-00001$/);
    expect(first.lines).toMatchObject([{ kind: 'subscription', amount: 5000, discountAmount: 750, taxAmount: 808, computation: { source: 'charge', model: 'flat' } }]);
    await expect(b.createInvoice(ctx(o), {})).rejects.toMatchObject({ code: 'BILLING.NOTHING_TO_INVOICE' });

    const subscription = await b.getSubscription(o);
    const addCharge = (amount: number) =>
      t.db.withTenant(o, (trx) =>
        sql`insert into billing_charges (tenant_id, id, subscription_id, kind, amount, currency, quantity, price_id, description, period_start, period_end)
            values (${o}, ${newId()}, ${subscription.id}, 'proration_charge', ${amount}, 'USD', 1, ${subscription.priceId}, 'Extra', ${start}, now())`.execute(trx),
      );
    // A credit note on an unpaid invoice reduces what is owed; beyond that it goes to the balance.
    await expect(b.createCreditNote(ctx(o), first.id, { amount: 99_999, reason: 'other' })).rejects.toMatchObject({ code: 'BILLING.CREDIT_TOO_LARGE' });
    const note = await b.createCreditNote(ctx(o), first.id, { amount: 58, reason: 'product_unsatisfactory' });
    expect(note).toMatchObject({ amount: 58, outstandingAmount: 58, balanceAmount: 0 });
    expect((await b.getInvoice(o, first.id)).amountDue).toBe(5000);

    await addCharge(1000);
    const draft = await b.createInvoice(ctx(o), { finalize: false });
    expect(draft).toMatchObject({ status: 'draft', number: null, subtotal: 1000 });
    await b.deleteDraft(ctx(o), draft.id);
    const again = await b.createInvoice(ctx(o), { finalize: false }); // the deleted draft's charge is owed again
    expect(again.subtotal).toBe(1000);
    const fin = await b.finalizeInvoice(ctx(o), again.id);
    expect(fin).toMatchObject({ status: 'finalized', total: 1012 }); // 1000 − 15 % + 19 %
    expect(fin.number).toMatch(/-00002$/);
    const voided = await b.voidInvoice(ctx(o), fin.id);
    expect(voided.status).toBe('void');
    await expect(b.voidInvoice(ctx(o), fin.id)).rejects.toMatchObject({ code: 'BILLING.INVALID_INVOICE_STATE' });

    const drafts: string[] = [];
    for (let i = 0; i < 6; i++) {
      await addCharge(100 + i);
      drafts.push((await b.createInvoice(ctx(o), { finalize: false })).id);
    }
    const done = await Promise.all(drafts.map((id) => b.finalizeInvoice(ctx(o), id)));
    expect(new Set(done.map((d) => d.number)).size).toBe(6);
    const numbers = (await invoicesOf(o)).map((x) => Number(x.number!.split('-')[1])).sort((x, y) => x - y);
    expect(numbers).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);

    expect(await b.verifyInvoices(o)).toMatchObject({ invoices: 8, mismatches: [] });
    await t.db.withTenant(o, (trx) => sql`update billing_invoice_lines set amount = 4000 where invoice_id = ${first.id}`.execute(trx));
    const { mismatches } = await b.verifyInvoices(o, first.id);
    expect(mismatches.map((m) => m.field)).toEqual(expect.arrayContaining(['computation.amount', 'amount']));
    await t.db.withTenant(o, (trx) => sql`update billing_invoice_lines set amount = 5000 where invoice_id = ${first.id}`.execute(trx));
  });

  it('invoices every queued renewal in one batch, as the per-event path would, recomputably, gap-free, once', async () => {
    const b = t.modules.billing;
    const a = await org(ids.metered!, { coupon: true }); // usage + coupon + tax, by the run
    const twin = await org(ids.metered!, { coupon: true }); // the same, by the per-event path
    const f = await org(ids.flat!); // licensed: its first period was invoiced before (number 1)
    const credit = await org(ids.flat!); // a credit balance: the run hands it to the per-event path
    const bad = await org(ids.flat!); // an open charge whose price does not exist: fails alone
    await usage(a);
    await usage(twin);
    expect((await b.createInvoice(ctx(f), {})).number).toMatch(/-00001$/);
    await b.createInvoice(ctx(credit), {});
    await b.createInvoice(ctx(bad), {});
    await t.db.withTenant(credit, (trx) => sql`insert into billing_customer_balances (tenant_id, currency, balance) values (${credit}, 'USD', 700)`.execute(trx));
    const badSub = await b.getSubscription(bad);
    await t.db.withTenant(bad, (trx) =>
      sql`insert into billing_charges (tenant_id, id, subscription_id, kind, amount, currency, quantity, price_id, description, period_start, period_end)
          values (${bad}, ${newId()}, ${badSub.id}, 'proration_charge', 100, 'USD', 1, ${newId()}, 'Broken', now() - interval '1 day', now())`.execute(trx),
    );

    // The renewal schedule: each org renews by the wall clock and queues its period (in the renewal's transaction).
    for (const o of [a, twin, f, credit, bad]) await b.advance(ctx(o));
    for (const o of [a, twin, f, credit, bad]) expect((await queued(o)).n).toBe(1);
    // The twin is invoiced the per-event way first (its queued period then owes nothing).
    statements = 0;
    const byEvent = await b.createInvoice(ctx(twin), {});
    const perEventStatements = statements;

    statements = 0;
    const r = await b.runInvoiceQueue({ batchSize: 50 });
    const runStatements = statements;
    expect(r).toMatchObject({ periods: 4, invoices: 3, failed: 1 });

    // The same invoice as the per-event path: lines (kinds, amounts, discount, tax, computation), totals.
    const [inv] = await invoicesOf(a);
    const full = await b.getInvoice(a, inv!.id);
    expect(full).toMatchObject({ status: 'finalized', reason: 'subscription_cycle', subtotal: byEvent.subtotal, discountTotal: byEvent.discountTotal, taxTotal: byEvent.taxTotal, total: byEvent.total, amountDue: byEvent.amountDue });
    expect(full.number).toMatch(/-00001$/);
    expect(full.lines.map(strip)).toEqual(byEvent.lines.map(strip));
    // 12 events, values 1..12: 78 calls = 20 × 10 + 58 × 4 = 432; 15 % off; 19 % on the rest.
    expect(full.lines).toMatchObject([{ kind: 'usage', quantity: 78, amount: 432, computation: { usage: { value: '78', events: 12 } } }]);
    expect(full).toMatchObject({ discountTotal: 65, taxTotal: 70, total: 437, discount: { key: 'run-forever' }, tax: { country: 'DE' } });
    expect(await b.verifyInvoices(a)).toEqual({ invoices: 1, mismatches: [] });

    // Gap-free after the earlier invoice; the renewal's charge claimed; recomputes.
    const fInvoices = await invoicesOf(f);
    expect(fInvoices.map((x) => x.number!.split('-')[1])).toEqual(['00002', '00001']);
    expect(fInvoices[0]).toMatchObject({ status: 'finalized', subtotal: 5000, taxTotal: 950, total: 5950 });
    expect(await b.verifyInvoices(f)).toEqual({ invoices: 2, mismatches: [] });
    // The credit balance paid part of it (the per-event path, inside the batch).
    expect((await invoicesOf(credit))[0]).toMatchObject({ total: 5950, creditApplied: 700, amountDue: 5250 });
    expect(await b.creditBalance(credit)).toEqual({ balance: 0, currency: 'USD' });

    // The failing org: nothing written, still queued, its failure counted.
    expect((await invoicesOf(bad)).length).toBe(1);
    expect(await queued(bad)).toEqual({ n: 1, attempts: 1 });
    for (const o of [a, twin, f, credit]) expect((await queued(o)).n).toBe(0);

    // Audit and outbox rows of each org, in that org's tenant.
    const rows = await sql<{ tenant_id: string; n: number }>`
      select tenant_id, count(*)::int as n from outbox where name = 'billing.invoice_finalized' and tenant_id = any(${[a, f, credit]}::uuid[]) group by 1`.execute(t.db.owner);
    const finalizedEvents = Object.fromEntries(rows.rows.map((x) => [x.tenant_id, x.n]));
    expect([finalizedEvents[a], finalizedEvents[f], finalizedEvents[credit]]).toEqual([1, 2, 2]);
    for (const o of [a, f]) {
      const audit = await t.db.withTenant(o, (trx) => sql<{ action: string }>`select action from audit_events where target_type = 'billing_invoice' order by id`.execute(trx));
      expect(audit.rows.map((x) => x.action).filter((x) => x === 'billing.invoice.finalize').length).toBe(o === f ? 2 : 1);
    }

    // Once: another run, a redelivered renewal event, the period queued again — nothing new.
    const again = await b.runInvoiceQueue({ batchSize: 50 });
    expect(again).toMatchObject({ invoices: 0, failed: 1 });
    const sub = await b.getSubscription(a);
    await t.db.withTenant(a, (trx) => b.invoiceForSubscriptionEvent(trx, a, 'renewed', { subscriptionId: sub.id, currentPeriodEnd: sub.currentPeriodEnd.toISOString() }));
    expect((await queued(a)).n).toBe(0);
    expect((await invoicesOf(a)).length).toBe(1);
    expect((await invoicesOf(f)).length).toBe(2);
    expect(await queued(bad)).toEqual({ n: 1, attempts: 2 });

    // Statements: the per-event path vs the run (5 orgs, one of them on the per-event path, one failing twice).
    console.info(`invoice run: ${runStatements} statements for 4 orgs in the batch + 1 alone; per-event path ${perEventStatements} for one invoice`);
    expect(perEventStatements).toBeGreaterThan(20);
  });

  it('a clean batch costs a fixed number of statements, whatever its number of orgs (one call per step for the whole batch)', async () => {
    const b = t.modules.billing;
    await sql`delete from billing_invoice_queue where done_at is null`.execute(t.db.owner); // the failing org of the test above
    const orgs = [await org(ids.metered!), await org(ids.metered!), await org(ids.flat!), await org(ids.metered!)];
    for (const o of orgs) await usage(o);
    for (const o of orgs) await b.advance(ctx(o));
    statements = 0;
    expect(await b.runInvoiceQueue({ batchSize: 50 })).toMatchObject({ periods: 4, invoices: 4, failed: 0, batches: 1 });
    const batchOne = statements;
    // Per batch, whatever its number of orgs (migration 0156's functions take the whole batch): begin, claim,
    // load + lock, 2 prices, meters, tax rate, usage aggregate, write (invoices, lines, charges, cursors, audit
    // records, events), reset tenant, mark done, note orgs, commit = 14, and the empty claims of the run's
    // other parallel loops (begin, claim, commit each). One statement per step per org was 4 × 7 + 9 + 9.
    expect(batchOne).toBeLessThanOrEqual(14 + 6);
    console.info(`invoice run: ${batchOne} statements for a batch of 4 invoices (${(batchOne / 4).toFixed(1)} per invoice, batch overhead included)`);
    for (const o of orgs) expect(await b.verifyInvoices(o)).toEqual({ invoices: 1, mismatches: [] });
  });

  it('a paced run (maxPerSec) spreads its batches: 3 single-org batches at 5/s take at least 0.6 s, and all are invoiced once', async () => {
    const b = t.modules.billing;
    const orgs = [await org(ids.flat!), await org(ids.flat!), await org(ids.flat!)];
    for (const o of orgs) await b.advance(ctx(o));
    const t0 = Date.now();
    expect(await b.runInvoiceQueue({ batchSize: 1, maxPerSec: 5 })).toMatchObject({ periods: 3, invoices: 3, failed: 0, drained: true });
    // Batches at 0, 0.2 and 0.4 s, the empty claim that finds the queue drained at 0.6 s.
    expect(Date.now() - t0).toBeGreaterThanOrEqual(550);
    for (const o of orgs) expect(await b.verifyInvoices(o)).toEqual({ invoices: 1, mismatches: [] });
  });

  it("the batch functions run each org's statements under that org's RLS context: no read or write of another org", async () => {
    const [a, other] = [await org(ids.flat!), await org(ids.flat!)];
    const charge = async (o: string) => (await t.db.withTenant(o, (trx) => sql<{ id: string }>`select id from billing_charges where tenant_id = ${o} and invoice_id is null`.execute(trx))).rows[0]!.id;
    const otherCharge = await charge(other);
    const item = (audit: object[], chargeIds: string[], events: object[] = []) => JSON.stringify([{
      org: a, cursor: null, audit, events, number_prefix: 'X', charge_ids: chargeIds, lines: [],
      invoice: { id: newId(), status: 'finalized', reason: 'subscription_cycle', subscription_id: null, currency: 'USD', period_start: start, period_end: start,
        customer: {}, usage_cutoff: start, discount: null, tax: null, subtotal: 0, discount_total: 0, tax_total: 0, total: 0, amount_due: 0, finalized_at: start, paid_at: null },
    }]);
    const write = (json: string) => t.db.app.transaction().execute((trx) => sql`select * from billing_invoice_run_write(${json}::jsonb)`.execute(trx));
    const auditOf = (tenant: string) => ({ tenant_id: tenant, id: newId(), occurred_at: new Date().toISOString(), actor_type: 'system', actor_id: 'test', actor_user_id: null,
      action: 'test.cross', target_type: 't', target_id: 't', request_id: null, ip: null, changes: {}, pd_ref: null });
    // An audit row of another org inside org a's item: refused by the WITH CHECK of a's context, the whole call rolls back.
    await expect(write(item([auditOf(other)], []))).rejects.toThrow(/row-level security/);
    // Another org's charge is invisible in a's context: nothing claimed, the call fails.
    await expect(write(item([], [otherCharge]))).rejects.toThrow(/already on another invoice/);
    // The load returns only what a's context sees: asked for the other org under a's item, it is not there.
    const loaded = await t.db.app.transaction().execute((trx) => sql<{ org: string; state: { charges: Array<{ tenant_id: string }> } }>`select * from billing_invoice_run_load(${[a]}::uuid[])`.execute(trx));
    expect(loaded.rows.map((r) => r.org)).toEqual([a]);
    expect(loaded.rows[0]!.state.charges.every((ch) => ch.tenant_id === a)).toBe(true);
    // Nothing was written for a, and the context is cleared after a call.
    expect(await charge(other)).toBe(otherCharge);
    const after = await t.db.app.transaction().execute(async (trx) => {
      await sql`select * from billing_invoice_run_load(${[a]}::uuid[])`.execute(trx);
      return (await sql<{ v: string }>`select current_setting('app.tenant_id', true) as v`.execute(trx)).rows[0]!.v;
    });
    expect(after).toBe('');
  });
});
