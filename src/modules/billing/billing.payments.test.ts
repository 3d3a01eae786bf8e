import { sql } from 'kysely';
import Stripe from 'stripe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeStripe, type FakeStripe } from '../../../test/helpers/fake-stripe.ts';
import { captureLogger, waitFor } from '../../../test/helpers/jobs.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import type { TxHandle } from '../../platform/db/database.ts';
import { newId } from '../../platform/ids.ts';
import { registry } from '../../platform/observability/metrics.ts';
import { createStripeGateway } from './billing.gateway-stripe.ts';
import { signSandboxWebhook, type GatewayPaymentUpdate, type PaymentUpdates, type ReconciliationAttempt } from './use-cases/payment-webhooks.ts';
import { paymentReconciliation } from './use-cases/reconciliation.ts';

const WHSEC = 'whsec_test_plinth';
const SANDBOX_SECRET = 'sandbox-webhook-secret-for-tests';

/**
 * TEST-ONLY stand-in for the payment attempts (the invoices/payments work implements PaymentUpdates on the
 * billing service): attempts keyed by (org, gateway payment id), looked up inside the org only, monotonic
 * status. It records every call with the tenant context the caller's transaction carries.
 */
function attemptsRecorder() {
  const attempts = new Map<string, ReconciliationAttempt>();
  const calls: Array<{ orgId: string; tenantContext: string | null; update: GatewayPaymentUpdate; viaTrx: boolean }> = [];
  const rank: Record<string, number> = { processing: 1, requires_action: 1, failed: 2, canceled: 2, succeeded: 3 };
  const updates: PaymentUpdates = {
    async applyGatewayPaymentUpdate(orgId, update, trx?: TxHandle) {
      // A query on the caller's transaction: a second transaction here would wait forever on PGlite.
      const tenantContext = trx ? (await sql<{ t: string | null }>`select nullif(current_setting('app.tenant_id', true), '') as t`.execute(trx)).rows[0]!.t : null;
      calls.push({ orgId, tenantContext, update, viaTrx: trx !== undefined });
      const a = attempts.get(`${orgId}|${update.gatewayPaymentId}`);
      if (!a) return { found: false };
      if ((rank[update.status] ?? 0) >= (rank[a.status] ?? 0)) a.status = update.status;
      return { found: true };
    },
    async listPaymentAttemptsForReconciliation({ limit, after }) {
      return [...attempts.values()].sort((x, y) => x.attemptId.localeCompare(y.attemptId)).filter((a) => !after || a.attemptId > after).slice(0, limit);
    },
  };
  const add = (a: Omit<ReconciliationAttempt, 'invoiceId' | 'attemptId' | 'currency'> & { currency?: string }) => {
    const full = { invoiceId: newId(), attemptId: newId(), currency: 'EUR', ...a };
    attempts.set(`${a.orgId}|${a.gatewayPaymentId}`, full);
    return full;
  };
  return { updates, attempts, calls, add };
}

let t: TestPlatform;
let fake: FakeStripe;
let rec: ReturnType<typeof attemptsRecorder>;
const logs = captureLogger();

beforeAll(async () => {
  fake = await startFakeStripe({ apiKey: 'sk_test_plinth' });
  rec = attemptsRecorder();
  t = await createTestPlatform({
    env: { PAYMENT_GATEWAY: 'stripe', STRIPE_SECRET_KEY: 'sk_test_plinth', STRIPE_WEBHOOK_SECRET: WHSEC, STRIPE_API_BASE: fake.url, SANDBOX_WEBHOOK_SECRET: SANDBOX_SECRET, STRIPE_TIMEOUT_MS: '2000' },
    seams: { payments: { updates: rec.updates } },
    logger: logs.logger,
  });
  await t.events.startWorker();
});
afterAll(async () => {
  await t?.close();
  await fake?.close();
});

let seq = 0;
/** A Stripe event as Stripe sends it (the subset billing reads, plus envelope fields). */
function intentEvent(type: string, pi: { id: string; status: string; amount?: number; orgId?: string | null; lastError?: object }, created = Math.floor(Date.now() / 1000)) {
  return {
    id: `evt_${Date.now()}_${++seq}`,
    object: 'event',
    api_version: '2026-10-28.endive',
    created,
    livemode: false,
    pending_webhooks: 1,
    type,
    data: {
      object: {
        id: pi.id,
        object: 'payment_intent',
        amount: pi.amount ?? 4900,
        currency: 'eur',
        status: pi.status,
        metadata: pi.orgId === null ? {} : { orgId: pi.orgId ?? newId(), invoiceId: 'inv_1', attemptId: 'att_1' },
        last_payment_error: pi.lastError ?? null,
        created,
      },
    },
  };
}

const sendStripe = (event: object | string, opts: { secret?: string; timestamp?: number; header?: string | null; tamper?: boolean } = {}) => {
  const payload = typeof event === 'string' ? event : JSON.stringify(event);
  const signature = Stripe.webhooks.generateTestHeaderString({ payload, secret: opts.secret ?? WHSEC, ...(opts.timestamp ? { timestamp: opts.timestamp } : {}) });
  const body = opts.tamper ? payload.replace('4900', '1') : payload;
  return t.app.inject({
    method: 'POST',
    url: '/v1/webhooks/payments/stripe',
    payload: body,
    headers: { 'content-type': 'application/json; charset=utf-8', ...(opts.header === null ? {} : { 'stripe-signature': opts.header ?? signature }) },
  });
};

const inboxRow = (eventId: string) => t.db.owner.selectFrom('billing_payment_events').select(['status', 'org_id', 'object_id', 'outcome', 'event_type']).where('event_id', '=', eventId).executeTakeFirst();
const settled = async (eventId: string) => (await waitFor(() => inboxRow(eventId), (r) => r !== undefined && r.status !== 'received'))!;

describe('incoming payment webhooks: verified with the gateway library, inbox first, processed asynchronously', () => {
  it('stores a signed Stripe event once, answers 200 at once, and applies it in the org named by the signed metadata', async () => {
    const orgId = newId();
    rec.add({ orgId, gatewayPaymentId: 'pi_webhook_ok', status: 'processing', amount: 4900 });
    const event = intentEvent('payment_intent.succeeded', { id: 'pi_webhook_ok', status: 'succeeded', orgId });
    const first = await sendStripe(event);
    expect(first.statusCode, first.body).toBe(200);
    expect(first.json()).toEqual({ received: true, duplicate: false });
    // The same delivery again (the gateway retries on any doubt): acknowledged, not stored or applied twice.
    expect((await sendStripe(event)).json()).toEqual({ received: true, duplicate: true });

    expect(await settled(event.id)).toMatchObject({ status: 'processed', org_id: orgId, object_id: 'pi_webhook_ok' });
    const calls = rec.calls.filter((c) => c.update.gatewayPaymentId === 'pi_webhook_ok');
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({ orgId, tenantContext: orgId, viaTrx: true, update: { status: 'succeeded', amount: 4900, currency: 'EUR', gateway: 'stripe', source: 'webhook', metadata: { orgId, attemptId: 'att_1' } } });
    expect(rec.attempts.get(`${orgId}|pi_webhook_ok`)!.status).toBe('succeeded');
    const rows = await t.db.owner.selectFrom('billing_payment_events').select('id').where('event_id', '=', event.id).execute();
    expect(rows).toHaveLength(1);

    // Two deliveries of one event at the same moment (a gateway retry racing the first): one is stored.
    const racing = intentEvent('payment_intent.processing', { id: 'pi_webhook_race', status: 'processing', orgId });
    const both = await Promise.all([sendStripe(racing), sendStripe(racing)]);
    expect(both.map((r) => r.statusCode)).toEqual([200, 200]);
    expect(both.map((r) => r.json().duplicate).sort()).toEqual([false, true]);
    await settled(racing.id);
    expect(rec.calls.filter((c) => c.update.gatewayPaymentId === 'pi_webhook_race')).toHaveLength(1);
  });

  it('maps failures (decline codes, 3-D Secure) and refunds', async () => {
    const orgId = newId();
    const failed = intentEvent('payment_intent.payment_failed', { id: 'pi_fail_1', status: 'requires_payment_method', orgId, lastError: { type: 'card_error', code: 'card_declined', decline_code: 'insufficient_funds' } });
    const auth = intentEvent('payment_intent.payment_failed', { id: 'pi_auth_1', status: 'requires_payment_method', orgId, lastError: { type: 'card_error', code: 'authentication_required' } });
    const refund = {
      ...intentEvent('charge.refunded', { id: 'x', status: 'succeeded', orgId }),
      data: { object: { id: 'ch_1', object: 'charge', payment_intent: 'pi_refund_1', amount: 4900, amount_refunded: 900, currency: 'eur', metadata: { orgId }, refunded: false } },
    };
    for (const e of [failed, auth, refund]) expect((await sendStripe(e)).statusCode).toBe(200);
    for (const e of [failed, auth, refund]) expect((await settled(e.id)).status).toBe('processed');
    const byPayment = (id: string) => rec.calls.find((c) => c.update.gatewayPaymentId === id)!.update;
    expect(byPayment('pi_fail_1')).toMatchObject({ status: 'failed', failureCode: 'insufficient_funds' });
    expect(byPayment('pi_auth_1')).toMatchObject({ status: 'requires_action', failureCode: 'authentication_required' });
    expect(byPayment('pi_refund_1')).toMatchObject({ status: 'succeeded', amount: 4900, amountRefunded: 900 });
  });

  it('refuses bad signatures, stale timestamps, tampered bodies and missing headers with 400 problem+json, and oversized bodies with 413: nothing stored', async () => {
    const event = intentEvent('payment_intent.succeeded', { id: 'pi_bad_sig', status: 'succeeded' });
    const attempts = [
      await sendStripe(event, { secret: 'whsec_wrong' }),
      await sendStripe(event, { timestamp: Math.floor(Date.now() / 1000) - 3_600 }),
      await sendStripe(event, { tamper: true }),
      await sendStripe(event, { header: null }),
      await sendStripe(event, { header: 't=1,v1=deadbeef' }),
    ];
    for (const res of attempts) {
      expect(res.statusCode, res.body).toBe(400);
      expect(res.headers['content-type']).toContain('application/problem+json');
      expect(res.json().code).toBe('BILLING.WEBHOOK_BAD_SIGNATURE');
      expect(res.body).not.toContain(WHSEC);
    }
    const big = { ...event, id: 'evt_big', data: { object: { ...event.data.object, description: 'x'.repeat(300 * 1024) } } };
    const tooBig = await sendStripe(big);
    expect(tooBig.statusCode).toBe(413);
    expect(tooBig.headers['content-type']).toContain('application/problem+json');
    const stored = await t.db.owner.selectFrom('billing_payment_events').select('id').where('event_id', 'in', [event.id, 'evt_big']).execute();
    expect(stored).toEqual([]);
    expect(rec.calls.some((c) => c.update.gatewayPaymentId === 'pi_bad_sig')).toBe(false);
    // A sandbox signature is not a Stripe signature (different secret and header).
    const body = JSON.stringify(event);
    const crossed = await t.app.inject({ method: 'POST', url: '/v1/webhooks/payments/stripe', payload: body, headers: { 'content-type': 'application/json', 'stripe-signature': signSandboxWebhook(body, SANDBOX_SECRET) } });
    expect(crossed.statusCode).toBe(400);
  });

  it('stores unknown event types and events naming no org, marked ignored, without applying anything', async () => {
    const unknown = { id: `evt_unknown_${++seq}`, object: 'event', type: 'customer.created', created: Math.floor(Date.now() / 1000), data: { object: { id: 'cus_1', object: 'customer', metadata: {} } } };
    const noOrg = intentEvent('payment_intent.succeeded', { id: 'pi_no_org', status: 'succeeded', orgId: null });
    for (const e of [unknown, noOrg]) expect((await sendStripe(e)).json()).toEqual({ received: true, duplicate: false });
    expect(await inboxRow(unknown.id)).toMatchObject({ status: 'ignored', event_type: 'customer.created', outcome: 'event type not handled' });
    expect(await inboxRow(noOrg.id)).toMatchObject({ status: 'ignored', org_id: null, outcome: 'no orgId in the payment metadata' });
    expect(rec.calls.some((c) => c.update.gatewayPaymentId === 'pi_no_org')).toBe(false);
  });

  it('tolerates out-of-order delivery: an older state arriving after a newer one is stored and skipped as stale', async () => {
    const orgId = newId();
    rec.add({ orgId, gatewayPaymentId: 'pi_order', status: 'processing', amount: 4900 });
    const now = Math.floor(Date.now() / 1000);
    const succeeded = intentEvent('payment_intent.succeeded', { id: 'pi_order', status: 'succeeded', orgId }, now);
    const olderFailure = intentEvent('payment_intent.payment_failed', { id: 'pi_order', status: 'requires_payment_method', orgId, lastError: { code: 'card_declined' } }, now - 30);
    await sendStripe(succeeded);
    expect((await settled(succeeded.id)).status).toBe('processed');
    await sendStripe(olderFailure);
    expect(await settled(olderFailure.id)).toMatchObject({ status: 'stale', outcome: `superseded by ${succeeded.id}` });
    expect(rec.calls.filter((c) => c.update.gatewayPaymentId === 'pi_order').map((c) => c.update.status)).toEqual(['succeeded']);
    expect(rec.attempts.get(`${orgId}|pi_order`)!.status).toBe('succeeded');
  });

  it("routes by the signed orgId only: an event naming org B cannot touch org A's payment of the same id", async () => {
    const a = newId();
    const b = newId();
    rec.add({ orgId: a, gatewayPaymentId: 'pi_tenant', status: 'processing', amount: 4900 });
    const forB = intentEvent('payment_intent.payment_failed', { id: 'pi_tenant', status: 'requires_payment_method', orgId: b, lastError: { code: 'card_declined' } });
    await sendStripe(forB);
    expect((await settled(forB.id)).status).toBe('processed');
    const call = rec.calls.find((c) => c.update.gatewayPaymentId === 'pi_tenant')!;
    // Applied in B's tenant context, where A's attempt does not exist.
    expect(call).toMatchObject({ orgId: b, tenantContext: b });
    expect(rec.attempts.get(`${a}|pi_tenant`)!.status).toBe('processing');
  });

  it('accepts sandbox webhooks signed with the sandbox secret (Sandbox-Signature: t=…,v1=…)', async () => {
    const orgId = newId();
    const event = intentEvent('payment_intent.succeeded', { id: 'sbx_pi_1', status: 'succeeded', orgId });
    const body = JSON.stringify(event);
    const send = (signature: string, header = 'sandbox-signature') =>
      t.app.inject({ method: 'POST', url: '/v1/webhooks/payments/sandbox', payload: body, headers: { 'content-type': 'application/json', [header]: signature } });
    expect((await send(signSandboxWebhook(body, 'not-the-secret'))).statusCode).toBe(400);
    expect((await send(Stripe.webhooks.generateTestHeaderString({ payload: body, secret: WHSEC }), 'stripe-signature')).statusCode).toBe(400);
    expect((await send(signSandboxWebhook(body, SANDBOX_SECRET, Math.floor(Date.now() / 1000) - 3_600))).statusCode).toBe(400);
    const ok = await send(signSandboxWebhook(body, SANDBOX_SECRET));
    expect(ok.statusCode, ok.body).toBe(200);
    expect(await settled(event.id)).toMatchObject({ status: 'processed', org_id: orgId });
    expect(rec.calls.find((c) => c.update.gatewayPaymentId === 'sbx_pi_1')!.update).toMatchObject({ gateway: 'sandbox', status: 'succeeded' });
    expect((await t.app.inject({ method: 'POST', url: '/v1/webhooks/payments/paypal', payload: body, headers: { 'content-type': 'application/json' } })).statusCode).toBe(400);
  });
});

describe('payment reconciliation against the fake Stripe server', () => {
  it('repairs a payment that succeeded at the gateway while the local attempt says processing, and reports what it cannot repair', async () => {
    const orgId = newId();
    const stripe = createStripeGateway({ secretKey: 'sk_test_plinth', apiBase: fake.url });
    const { gatewayCustomerId } = await stripe.createCustomer({ orgId, email: null, name: 'Recon' }, newId());
    const { paymentMethodId } = await stripe.attachPaymentMethod({ gatewayCustomerId, paymentMethod: 'pm_card_visa' }, newId());
    const charge = (amount: number) => stripe.charge({ gatewayCustomerId, paymentMethodId, amount, currency: 'EUR', description: 'recon', metadata: { orgId } }, newId());
    const paid = await charge(4900);
    const inSync = await charge(1500);
    const otherAmount = await charge(2000);
    const drifted = rec.add({ orgId, gatewayPaymentId: paid.gatewayPaymentId, status: 'processing', amount: 4900 });
    rec.add({ orgId, gatewayPaymentId: inSync.gatewayPaymentId, status: 'succeeded', amount: 1500 });
    const unknown = rec.add({ orgId, gatewayPaymentId: 'pi_never_created', status: 'processing', amount: 700 });
    const mismatch = rec.add({ orgId, gatewayPaymentId: otherAmount.gatewayPaymentId, status: 'succeeded', amount: 2500 });
    const callsBefore = rec.calls.length;

    const report = await t.modules.billing.reconcilePayments!();
    expect(report.repaired.map((d) => [d.attemptId, d.kind, d.local.status, d.gateway?.status])).toEqual([[drifted.attemptId, 'status', 'processing', 'succeeded']]);
    expect(rec.attempts.get(`${orgId}|${paid.gatewayPaymentId}`)!.status).toBe('succeeded');
    const repairCall = rec.calls.slice(callsBefore).find((c) => c.update.gatewayPaymentId === paid.gatewayPaymentId)!;
    expect(repairCall).toMatchObject({ orgId, viaTrx: false, update: { status: 'succeeded', source: 'reconciliation', gateway: 'stripe', amount: 4900 } });
    const unrepaired = report.unrepaired.filter((d) => d.orgId === orgId).map((d) => [d.attemptId, d.kind]);
    expect(unrepaired).toEqual(expect.arrayContaining([[unknown.attemptId, 'missing_at_gateway'], [mismatch.attemptId, 'amount']]));
    expect(unrepaired).toHaveLength(2);
    expect(report.inSync).toBeGreaterThanOrEqual(1);
    // Reported: a warn line per unrepaired drift, and the counter.
    expect(logs.lines.filter((l) => l.msg === 'payment drift reconciliation cannot repair' && l.attemptId === unknown.attemptId)[0]).toMatchObject({ level: 40, drift: 'missing_at_gateway', gatewayPaymentId: 'pi_never_created' });
    const metric = await registry.getSingleMetric('plinth_billing_payment_drift_total')!.get();
    expect(metric.values.find((v) => v.labels.kind === 'missing_at_gateway' && v.labels.outcome === 'reported')!.value).toBeGreaterThanOrEqual(1);
    expect(metric.values.find((v) => v.labels.kind === 'status' && v.labels.outcome === 'repaired')!.value).toBeGreaterThanOrEqual(1);
    // The secret key never reaches a log line.
    expect(JSON.stringify(logs.lines)).not.toContain('sk_test_plinth');

    // The module's gateway is the production wiring: guarded by the platform's shared `payment` policy.
    expect(t.policies.payment.breakerState('gateway:stripe')).toBe('closed');
    expect(t.policies.payment.size()).toBeGreaterThanOrEqual(1);
    // The schedule that runs this hourly is declared (one runner per occurrence across workers).
    const schedule = await t.db.owner.selectFrom('job_schedules').select(['name', 'next_run_at']).where('name', '=', 'billing.payments_reconcile').executeTakeFirst();
    expect(schedule?.name).toBe('billing.payments_reconcile');

    // A second run finds the repaired attempt in sync.
    const again = await t.modules.billing.reconcilePayments!();
    expect(again.repaired.filter((d) => d.orgId === orgId)).toEqual([]);
  });

  it('pages through attempts with the keyset cursor and stops at an unavailable gateway', async () => {
    const local = attemptsRecorder();
    const orgId = newId();
    const stripe = createStripeGateway({ secretKey: 'sk_test_plinth', apiBase: fake.url });
    for (let i = 0; i < 5; i++) local.add({ orgId, gatewayPaymentId: `pi_page_${i}`, status: 'processing', amount: 100 });
    const run = paymentReconciliation({ updates: local.updates, gateways: { stripe }, defaultGateway: 'stripe', logger: logs.logger, pageSize: 2 });
    const report = await run.run();
    expect(report.unrepaired.map((d) => d.gatewayPaymentId)).toEqual([0, 1, 2, 3, 4].map((i) => `pi_page_${i}`));
    fake.fail(1, 'http500', { path: '/v1/payment_intents/pi_page_0' });
    const down = await run.run();
    expect(down).toMatchObject({ unavailable: 1, checked: 1, unrepaired: [] });
    fake.clearFaults();
  });
});
