import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { adminAndMember, waitFor } from '../../../test/helpers/jobs.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { newId } from '../../platform/ids.ts';
import { createMemoryMailer } from '../notifications/index.ts';
import { runBillingCommand } from './billing.cli.ts';
import { createSandboxGateway } from './billing.gateway-sandbox.ts';

/**
 * Invoices and payments over HTTP, on one platform with its worker running: renewals invoice through the
 * outbox, finalized invoices are charged through the sandbox gateway, dunning runs on the org's test clock.
 * Event chains through the worker take tens of seconds on PGlite: this suite runs with TEST_DATABASE_URL
 * (or BILLING_INVOICE_TESTS=1 for the embedded database); billing.gateway-sandbox.test.ts always runs, and
 * billing.invoices-embedded.test.ts covers the invoice logic (and the batched invoice run) embedded in seconds.
 */
describe.runIf(Boolean(process.env.TEST_DATABASE_URL || process.env.BILLING_INVOICE_TESTS))(`billing invoices and payments (${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'})`, () => {
  let t: TestPlatform;
  let admin: { authorization: string };
  const mailer = createMemoryMailer(pino({ level: 'silent' }));
  const gateway = createSandboxGateway({ settleAfterMs: 0 });
  const plans: Record<string, string> = {};
  const storageDir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-invoices-'));

  const req = async (method: string, url: string, headers: object, payload?: object) => {
    const res = await t.app.inject({ method: method as 'GET', url, headers: headers as Record<string, string>, ...(payload ? { payload } : {}) });
    return { status: res.statusCode, body: res.body ? res.json() : null };
  };
  const ok = async (method: string, url: string, headers: object, payload?: object) => {
    const r = await req(method, url, headers, payload);
    if (r.status >= 300) throw new Error(`${method} ${url}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };
  const clock = (o: SignedUp, iso: string) => ok('POST', `/v1/orgs/${o.orgId}/billing/test-clock`, o.auth, { frozenTime: iso });
  const invoices = async (o: SignedUp) => (await ok('GET', `/v1/orgs/${o.orgId}/billing/invoices?limit=100`, o.auth)).data as any[];
  const invoice = (o: SignedUp, id: string) => ok('GET', `/v1/orgs/${o.orgId}/billing/invoices/${id}`, o.auth);
  const sub = (o: SignedUp) => ok('GET', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth);
  const day = (base: string, days: number, hours = 0) => new Date(Date.parse(base) + days * 86_400_000 + hours * 3_600_000).toISOString();

  async function customer(card: string, address: object = { country: 'DE' }): Promise<SignedUp> {
    const o = await signup(t.app);
    await ok('PATCH', `/v1/orgs/${o.orgId}/billing/customer`, o.auth, { email: `ap-${o.orgId.slice(-6)}@example.com`, currency: 'USD', address });
    await ok('PUT', `/v1/orgs/${o.orgId}/billing/payment-method`, o.auth, { token: card });
    return o;
  }

  beforeAll(async () => {
    t = await createTestPlatform({ env: { STORAGE_DIR: storageDir, DUNNING_FINAL_ACTION: 'downgrade', LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent' }, seams: { mailer, gateway } });
    ({ admin } = await adminAndMember(t));
    const product = await ok('POST', '/v1/admin/billing/products', admin, { key: 'plinth', name: 'Plinth' });
    const plan = async (key: string, rank: number, extra: object, price: object) => {
      const p = await ok('POST', '/v1/admin/billing/plans', admin, { productId: product.id, key, name: key[0]!.toUpperCase() + key.slice(1), rank, ...extra });
      await ok('POST', `/v1/admin/billing/plans/${p.id}/prices`, admin, { currency: 'USD', interval: 'month', ...price });
      plans[key] = p.id;
    };
    await plan('free', 0, { isDefault: true }, { model: 'flat', flatAmount: 0, entitlements: { limits: { projects: 1 } } });
    await plan('pro', 20, {}, { model: 'flat', flatAmount: 10000, entitlements: { features: ['sso'], limits: { projects: 100 } } });
    // Metered, graduated: the first 100 calls at 10, the rest at 5 (minor units).
    await plan('metered', 10, {}, { model: 'tiered', usageType: 'metered', metric: 'api.calls', tiers: [{ upTo: 100, unitAmount: 10, flatAmount: 0 }, { upTo: null, unitAmount: 5, flatAmount: 0 }] });
    await ok('POST', '/v1/admin/billing/meters', admin, { key: 'api.calls', name: 'API calls', aggregation: 'sum', property: null });
    await ok('POST', '/v1/admin/billing/tax-rates', admin, { country: 'DE', name: 'USt', percentage: 19 });
    await ok('POST', '/v1/admin/billing/tax-rates', admin, { country: 'US', region: 'NY', name: 'NY sales tax', percentage: 8.875, inclusive: true });
    const coupon = await ok('POST', '/v1/admin/billing/coupons', admin, { key: 'launch', name: 'Launch 10 %', percentOff: 10, duration: 'once' });
    await ok('POST', '/v1/admin/billing/promotion-codes', admin, { code: 'LAUNCH10', couponId: coupon.id, maxRedemptions: 5 });
    await t.events.startWorker();
  }, 60_000);
  afterAll(async () => {
    await t?.close();
    fs.rmSync(storageDir, { recursive: true, force: true });
  });

  it('subscribing invoices the first period through the outbox: coupon, exclusive tax, number 1, charged and paid once; PDF downloadable', async () => {
    const o = await customer('4242424242424242');
    expect((await req('POST', `/v1/orgs/${o.orgId}/billing/discount`, o.auth, { promotionCode: 'NOPE1' })).body.code).toBe('BILLING.PROMOTION_CODE_INVALID');
    await ok('POST', `/v1/orgs/${o.orgId}/billing/discount`, o.auth, { promotionCode: 'launch10' });
    await clock(o, '2030-01-01T00:00:00.000Z');
    await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plans.pro });
    const [first] = await waitFor(() => invoices(o), (xs) => xs[0]?.status === 'paid');
    const full = await invoice(o, first.id);
    expect(full).toMatchObject({ status: 'paid', reason: 'subscription_create', subtotal: 10000, discountTotal: 1000, taxTotal: 1710, total: 10710, amountDue: 10710, amountPaid: 10710, tax: { country: 'DE', percentagePpm: 190000, inclusive: false }, discount: { key: 'launch' } });
    expect(full.number).toMatch(/-00001$/);
    expect(full.lines).toMatchObject([{ kind: 'subscription', amount: 10000, discountAmount: 1000, taxAmount: 1710, priceVersion: 1, computation: { source: 'charge', model: 'flat', amount: 10000 } }]);
    const payments = (await ok('GET', `/v1/orgs/${o.orgId}/billing/payments`, o.auth)).data;
    expect(payments).toMatchObject([{ invoiceId: first.id, attemptNo: 1, status: 'succeeded', amount: 10710, gateway: 'sandbox' }]);
    expect(gateway.payments().filter((p) => p.metadata.invoiceId === first.id)).toHaveLength(1);
    // A once-coupon is used up.
    expect((await ok('GET', `/v1/orgs/${o.orgId}/billing/discount`, o.auth)).discount).toBeNull();
    const link = await waitFor(() => req('GET', `/v1/orgs/${o.orgId}/billing/invoices/${first.id}/pdf`, o.auth), (r) => r.status === 200);
    const pdf = await t.app.inject({ url: new URL(link.body.url).pathname + new URL(link.body.url).search });
    expect(pdf.statusCode).toBe(200);
    expect(pdf.rawPayload.subarray(0, 5).toString()).toBe('%PDF-');
    // Another org sees none of it.
    const other = await signup(t.app);
    expect((await req('GET', `/v1/orgs/${o.orgId}/billing/invoices/${first.id}`, other.auth)).status).toBe(404);
    expect((await req('GET', `/v1/orgs/${other.orgId}/billing/invoices/${first.id}`, other.auth)).body.code).toBe('BILLING.INVOICE_NOT_FOUND');
  });

  it('metered usage is invoiced at the period end from the ledger; verify recomputes it and catches a tampered line', async () => {
    const o = await customer('4242424242424242', { country: 'US', state: 'NY' });
    await clock(o, '2030-02-01T00:00:00.000Z');
    await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plans.metered, trial: false });
    const events = Array.from({ length: 30 }, (_, i) => ({ key: `call-${i}`, metric: 'api.calls', value: 5, timestamp: day('2030-02-01T00:00:00.000Z', 0, 1 + i / 10) }));
    await clock(o, '2030-02-02T12:00:00.000Z');
    expect((await ok('POST', `/v1/orgs/${o.orgId}/usage-events`, o.auth, { events })).accepted).toBe(30);
    await clock(o, '2030-03-01T06:00:00.000Z');
    const [inv] = await waitFor(() => invoices(o), (xs) => xs.some((x: any) => x.reason === 'subscription_cycle' && x.status === 'paid'));
    const full = await invoice(o, inv.id);
    // 150 calls: 100 × 10 + 50 × 5 = 1250, NY tax 8.875 % included in it.
    expect(full.lines).toMatchObject([{ kind: 'usage', quantity: 150, amount: 1250, computation: { usage: { metric: 'api.calls', aggregation: 'sum', value: '150', events: 30 } } }]);
    expect(full).toMatchObject({ subtotal: 1250, total: 1250, taxTotal: 102, tax: { inclusive: true } });
    expect(full.lines[0].computation.usage.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(await t.modules.billing.verifyInvoices(o.orgId)).toEqual({ invoices: 1, mismatches: [] });

    const out: string[] = [];
    expect(await runBillingCommand(t.modules.billing, ['verify', '--org', o.orgId], (l) => out.push(l))).toBe(0);
    await t.db.withTenant(o.orgId, (trx) => sql`update billing_invoice_lines set amount = 1000 where invoice_id = ${inv.id}`.execute(trx));
    out.length = 0;
    expect(await runBillingCommand(t.modules.billing, ['verify'], (l) => out.push(l))).toBe(1);
    expect(out.join('\n')).toContain(`line ${full.lines[0].id} computation.amount: stored 1250, recomputed 1000`);
    expect(out.join('\n')).toMatch(/line .* amount: stored 1000, recomputed 1250/);
    expect(await runBillingCommand(t.modules.billing, ['verify', '--org', 'nope'], () => {})).toBe(2);
  });

  it('dunning: a declined renewal makes the subscription past_due, is retried on the schedule, e-mails the billing contact, and recovers when a card works', async () => {
    const o = await customer('4000000000000002');
    const start = '2030-01-01T00:00:00.000Z';
    await clock(o, start);
    await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plans.pro });
    await waitFor(() => sub(o), (s) => s.status === 'past_due');
    const [inv] = await invoices(o);
    expect(inv).toMatchObject({ status: 'finalized', attemptCount: 1 });
    const next = Date.parse(inv.nextPaymentAttemptAt) - Date.parse(start);
    expect(Math.abs(next - 86_400_000)).toBeLessThanOrEqual(3_600_000); // day 1 ± jitter
    const mail = await waitFor(async () => mailer.sent.find((m) => m.to.startsWith(`ap-${o.orgId.slice(-6)}`)), (m) => !!m);
    expect(mail!.subject).toContain('failed');
    expect(mail!.text).toContain('card_declined');

    await clock(o, day(start, 1, 2));
    expect((await invoice(o, inv.id)).attemptCount).toBe(2);
    // A working card: the invoice is retried at the next step of the org's clock and the subscription recovers.
    await ok('PUT', `/v1/orgs/${o.orgId}/billing/payment-method`, o.auth, { token: 'tok_visa' });
    await clock(o, day(start, 1, 3));
    expect(await invoice(o, inv.id)).toMatchObject({ status: 'paid', amountPaid: 11900 });
    expect((await sub(o)).status).toBe('active');
    const attempts = (await ok('GET', `/v1/orgs/${o.orgId}/billing/payments?invoiceId=${inv.id}`, o.auth)).data;
    expect(attempts.map((a: any) => [a.attemptNo, a.status, a.failureCode])).toEqual([
      [3, 'succeeded', null],
      [2, 'failed', 'card_declined'],
      [1, 'failed', 'card_declined'],
    ]);
  });

  it('dunning: retries exhausted, the grace period over → invoice uncollectible and the subscription downgraded to the free plan', async () => {
    const o = await customer('4000000000009995');
    const start = '2030-01-01T00:00:00.000Z';
    await clock(o, start);
    await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plans.pro });
    await waitFor(() => sub(o), (s) => s.status === 'past_due');
    for (const d of [1, 3, 5, 7]) await clock(o, day(start, d, 2));
    const [inv] = await invoices(o);
    expect(inv).toMatchObject({ status: 'finalized', attemptCount: 5, nextPaymentAttemptAt: null });
    expect((await sub(o)).status).toBe('past_due');
    await clock(o, day(start, 10, 3));
    expect((await invoice(o, inv.id)).status).toBe('uncollectible');
    expect(await sub(o)).toMatchObject({ status: 'active', planId: plans.free });
    expect((await ok('GET', `/v1/orgs/${o.orgId}/billing/entitlements`, o.auth)).plan.key).toBe('free');
    await waitFor(async () => mailer.sent.find((m) => m.subject.includes('could not be collected') && m.to.startsWith(`ap-${o.orgId.slice(-6)}`)), (m) => !!m);
  }, 120_000);

  it('credit notes and the credit balance; void; drafts get no number; concurrent finalizations take gap-free numbers', async () => {
    const o = await customer('4242424242424242');
    await clock(o, '2030-01-01T00:00:00.000Z');
    await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plans.pro });
    const [paid] = await waitFor(() => invoices(o), (xs) => xs[0]?.status === 'paid');
    expect((await req('POST', `/v1/orgs/${o.orgId}/billing/invoices/${paid.id}/credit-notes`, o.auth, { amount: 99_999, reason: 'other' })).body.code).toBe('BILLING.CREDIT_TOO_LARGE');
    const note = await ok('POST', `/v1/orgs/${o.orgId}/billing/invoices/${paid.id}/credit-notes`, o.auth, { amount: 1500, reason: 'product_unsatisfactory' });
    expect(note).toMatchObject({ amount: 1500, balanceAmount: 1500, outstandingAmount: 0 });
    expect(await ok('GET', `/v1/orgs/${o.orgId}/billing/credit-balance`, o.auth)).toEqual({ balance: 1500, currency: 'USD' });
    const refund = await ok('POST', `/v1/orgs/${o.orgId}/billing/invoices/${paid.id}/credit-notes`, o.auth, { amount: 500, reason: 'duplicate', refund: true });
    expect(refund).toMatchObject({ refundAmount: 500, gatewayRefundId: expect.stringMatching(/^re_sbx_/) });

    // Open charges for drafts, as Billing I leaves them.
    const subscription = await sub(o);
    const addCharge = (amount: number) =>
      t.db.withTenant(o.orgId, (trx) =>
        trx.insertInto('billing_charges').values({ tenant_id: o.orgId, id: newId(), subscription_id: subscription.id, kind: 'proration_charge', amount, currency: 'USD', quantity: 1, price_id: subscription.priceId, description: 'Extra', period_start: new Date('2030-01-01'), period_end: new Date('2030-02-01') }).execute(),
      );
    await addCharge(1000);
    const draft = await ok('POST', `/v1/orgs/${o.orgId}/billing/invoices`, o.auth, { finalize: false });
    expect(draft).toMatchObject({ status: 'draft', number: null, subtotal: 1000 });
    const finalized = await ok('POST', `/v1/orgs/${o.orgId}/billing/invoices/${draft.id}/finalize`, o.auth);
    // 1000 + 19 % tax = 1190, of which the 1500 credit pays all.
    expect(finalized).toMatchObject({ status: 'paid', total: 1190, creditApplied: 1190, amountDue: 0 });
    expect(finalized.number).toMatch(/-00002$/);
    expect((await ok('GET', `/v1/orgs/${o.orgId}/billing/credit-balance`, o.auth)).balance).toBe(310);
    expect((await req('POST', `/v1/orgs/${o.orgId}/billing/invoices/${draft.id}/void`, o.auth)).body.code).toBe('BILLING.INVALID_INVOICE_STATE');
    await ok('DELETE', `/v1/orgs/${o.orgId}/billing/invoices/${(await (async () => (await addCharge(10), ok('POST', `/v1/orgs/${o.orgId}/billing/invoices`, o.auth, { finalize: false })))()).id}`, o.auth);
    expect((await req('POST', `/v1/orgs/${o.orgId}/billing/invoices`, o.auth, {})).status).toBe(201); // the deleted draft's charge is owed again

    const n = process.env.TEST_DATABASE_URL ? 20 : 12;
    const drafts: string[] = [];
    for (let i = 0; i < n; i++) {
      await addCharge(100 + i);
      drafts.push((await ok('POST', `/v1/orgs/${o.orgId}/billing/invoices`, o.auth, { finalize: false })).id);
    }
    // All at once: they serialize on the org's lock; a request that waits past the pool's acquire timeout is
    // answered 503 (nothing happened) and retried, as a client would.
    const finalize = async (id: string): Promise<any> => {
      for (;;) {
        const r = await req('POST', `/v1/orgs/${o.orgId}/billing/invoices/${id}/finalize`, o.auth);
        if (r.status !== 503) {
          expect(r.status).toBe(200);
          return r.body;
        }
      }
    };
    const done = await Promise.all(drafts.map(finalize));
    const numbers = (await invoices(o)).filter((x: any) => x.number).map((x: any) => Number(x.number.split('-')[1])).sort((a: number, b: number) => a - b);
    expect(numbers).toEqual(Array.from({ length: numbers.length }, (_, i) => i + 1));
    expect(new Set(done.map((d: any) => d.number)).size).toBe(n);
    const open = done.find((d: any) => d.status === 'finalized');
    if (open) {
      // The collection job (billing.invoice_finalized) may have charged it since: then voiding is refused
      // and the invoice stays paid; otherwise it is void. Never anything in between.
      const r = await req('POST', `/v1/orgs/${o.orgId}/billing/invoices/${open.id}/void`, o.auth);
      const after = (await invoices(o)).find((x: any) => x.id === open.id);
      if (r.status === 200) expect(after.status).toBe('void');
      else expect([r.body.code, after.status]).toEqual(['BILLING.INVALID_INVOICE_STATE', 'paid']);
    }
  }, 180_000);

  it('gateway updates apply once and only forward: a late failure never un-pays; reconciliation lists the attempt', async () => {
    const o = await customer('tok_sandbox_delayed');
    const since = new Date(Date.now() - 1000);
    await clock(o, '2030-01-01T00:00:00.000Z');
    await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plans.pro });
    const [attempt] = await waitFor(async () => (await ok('GET', `/v1/orgs/${o.orgId}/billing/payments`, o.auth)).data, (d: any[]) => d.length === 1);
    expect(attempt.status).toBe('processing');
    expect((await sub(o)).status).toBe('active');
    const listed = await t.modules.billing.listPaymentAttemptsForReconciliation({ since, limit: 1000 });
    expect(listed.find((a) => a.attemptId === attempt.id)).toMatchObject({ orgId: o.orgId, invoiceId: attempt.invoiceId, gatewayPaymentId: attempt.gatewayPaymentId, status: 'processing', amount: 11900, currency: 'USD' });
    const update = { gatewayPaymentId: attempt.gatewayPaymentId, amount: 11900, metadata: {} };
    expect(await t.modules.billing.applyGatewayPaymentUpdate(o.orgId, { ...update, status: 'succeeded' })).toMatchObject({ applied: true, invoiceStatus: 'paid' });
    expect(await t.modules.billing.applyGatewayPaymentUpdate(o.orgId, { ...update, status: 'succeeded' })).toMatchObject({ applied: false, reason: 'duplicate' });
    expect(await t.modules.billing.applyGatewayPaymentUpdate(o.orgId, { ...update, status: 'failed', failureCode: 'card_declined' })).toMatchObject({ applied: false, reason: 'stale' });
    expect(await t.modules.billing.applyGatewayPaymentUpdate(o.orgId, { ...update, gatewayPaymentId: 'pi_unknown', status: 'succeeded' })).toMatchObject({ applied: false, reason: 'unknown_payment' });
    expect(await invoice(o, attempt.invoiceId)).toMatchObject({ status: 'paid', amountPaid: 11900 });
    const paidEvents = await sql<{ n: number }>`select count(*)::int as n from outbox where tenant_id = ${o.orgId} and name = 'billing.invoice_paid'`.execute(t.db.owner);
    expect(paidEvents.rows[0]!.n).toBe(1);
  });

  it('bad input: unknown card, bad bodies, admin-only catalog of discounts and taxes', async () => {
    const o = await signup(t.app);
    expect((await req('PUT', `/v1/orgs/${o.orgId}/billing/payment-method`, o.auth, { token: '4111111111111112' })).body.code).toBe('BILLING.PAYMENT_METHOD_REFUSED');
    expect((await req('PUT', `/v1/orgs/${o.orgId}/billing/payment-method`, o.auth, { token: 'tok_visa', extra: 1 })).status).toBe(400);
    expect((await req('GET', `/v1/orgs/${o.orgId}/billing/payment-method`, o.auth)).body.code).toBe('BILLING.NO_PAYMENT_METHOD');
    expect((await req('POST', `/v1/orgs/${o.orgId}/billing/invoices`, o.auth, {})).body.code).toBe('BILLING.NOTHING_TO_INVOICE');
    expect((await req('POST', '/v1/admin/billing/coupons', o.auth, { key: 'x1', name: 'X', percentOff: 5, duration: 'once' })).status).toBe(403);
    expect((await req('POST', '/v1/admin/billing/coupons', admin, { key: 'both', name: 'X', percentOff: 5, amountOff: 100, currency: 'USD', duration: 'once' })).body.code).toBe('BILLING.INVALID_COUPON');
    expect((await req('POST', '/v1/admin/billing/coupons', admin, { key: 'rep', name: 'X', percentOff: 5, duration: 'repeating' })).body.code).toBe('BILLING.INVALID_COUPON');
    expect((await req('POST', '/v1/admin/billing/tax-rates', admin, { country: 'de', name: 'x', percentage: 19 })).status).toBe(400);
  });
});
