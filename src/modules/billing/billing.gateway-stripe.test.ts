import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFakeStripe, type FakeStripe } from '../../../test/helpers/fake-stripe.ts';
import { createDestinationPolicy, OUTBOUND_LIMITS } from '../../platform/resilience/policy.ts';
import { GatewayRequestError, GatewayUnavailableError, type PaymentGateway } from './billing.gateway.ts';
import { guardedGateway } from './billing.gateway-guard.ts';
import { createStripeGateway } from './billing.gateway-stripe.ts';

let fake: FakeStripe;
let stripe: PaymentGateway;
const key = () => `test-${Math.random().toString(36).slice(2)}`;

beforeAll(async () => {
  fake = await startFakeStripe({ apiKey: 'sk_test_plinth' });
  stripe = createStripeGateway({ secretKey: 'sk_test_plinth', apiBase: fake.url, timeoutMs: 2_000 });
});
afterAll(() => fake.close());
beforeEach(() => fake.clearFaults());

async function customerWith(gateway: PaymentGateway, token: string) {
  const { gatewayCustomerId } = await gateway.createCustomer({ orgId: '0190c5b0-0000-7000-8000-000000000001', email: 'billing@acme.test', name: 'Acme' }, key());
  const pm = await gateway.attachPaymentMethod({ gatewayCustomerId, paymentMethod: token }, key());
  return { gatewayCustomerId, paymentMethodId: pm.paymentMethodId, pm };
}

const chargeInput = (c: { gatewayCustomerId: string; paymentMethodId: string }, amount = 4900) => ({
  ...c,
  amount,
  currency: 'EUR',
  description: 'Invoice ACME-0001',
  metadata: { orgId: '0190c5b0-0000-7000-8000-000000000001', invoiceId: 'inv_1', attemptId: 'att_1' },
});

describe('stripe adapter against the fake Stripe API (official SDK, host/port/protocol)', () => {
  it('creates a customer, attaches a default card, charges off-session, retrieves and refunds, each write with its idempotency key', async () => {
    const c = await customerWith(stripe, 'pm_card_visa');
    expect(c.pm).toMatchObject({ brand: 'visa', last4: '4242' });
    expect(fake.customers.get(c.gatewayCustomerId)).toMatchObject({ email: 'billing@acme.test', metadata: { orgId: '0190c5b0-0000-7000-8000-000000000001' }, invoice_settings: { default_payment_method: c.paymentMethodId } });

    const k = key();
    const paid = await stripe.charge(chargeInput(c), k);
    expect(paid).toMatchObject({ status: 'succeeded', amount: 4900, currency: 'EUR', amountRefunded: 0, metadata: { invoiceId: 'inv_1', attemptId: 'att_1' } });
    expect(paid.failureCode).toBeUndefined();
    const pi = fake.paymentIntents.get(paid.gatewayPaymentId)!;
    expect(pi).toMatchObject({ amount: 4900, currency: 'eur', customer: c.gatewayCustomerId, payment_method: c.paymentMethodId, status: 'succeeded' });
    expect(fake.requests.find((r) => r.path === '/v1/payment_intents' && r.idempotencyKey === k)).toBeDefined();
    expect(fake.requests.every((r) => r.authorization === 'Bearer sk_test_plinth')).toBe(true);
    expect(fake.requests.filter((r) => r.method === 'POST').every((r) => typeof r.idempotencyKey === 'string')).toBe(true);

    const refund = await stripe.refund({ gatewayPaymentId: paid.gatewayPaymentId, amount: 900, metadata: { reason: 'credit note' } }, key());
    expect(refund).toMatchObject({ gatewayPaymentId: paid.gatewayPaymentId, amount: 900, status: 'succeeded' });
    expect(await stripe.retrievePayment(paid.gatewayPaymentId)).toMatchObject({ status: 'succeeded', amountRefunded: 900, amount: 4900 });
    await expect(stripe.refund({ gatewayPaymentId: paid.gatewayPaymentId, amount: 5000 }, key())).rejects.toMatchObject({ name: 'GatewayRequestError', code: 'amount_too_large', status: 400 });
  });

  it.each([
    ['pm_card_chargeDeclined', 'failed', 'card_declined'],
    ['pm_card_chargeDeclinedInsufficientFunds', 'failed', 'insufficient_funds'],
    ['pm_card_chargeDeclinedExpiredCard', 'failed', 'expired_card'],
    ['pm_card_chargeDeclinedProcessingError', 'failed', 'processing_error'],
    ['pm_card_authenticationRequired', 'requires_action', 'authentication_required'],
  ])('a %s charge is a result (%s, %s), not an exception; retrieve agrees', async (token, status, failureCode) => {
    const c = await customerWith(stripe, token);
    const result = await stripe.charge(chargeInput(c), key());
    expect(result).toMatchObject({ status, failureCode, amount: 4900, metadata: { attemptId: 'att_1' } });
    expect(result.gatewayPaymentId).toMatch(/^pi_/);
    expect(await stripe.retrievePayment(result.gatewayPaymentId)).toMatchObject({ status, failureCode });
  });

  it('honours Idempotency-Key: the same key and parameters replay one PaymentIntent; other parameters are refused', async () => {
    const c = await customerWith(stripe, 'pm_card_visa');
    const k = key();
    const first = await stripe.charge(chargeInput(c), k);
    const again = await stripe.charge(chargeInput(c), k);
    expect(again.gatewayPaymentId).toBe(first.gatewayPaymentId);
    expect([...fake.paymentIntents.values()].filter((p) => p.customer === c.gatewayCustomerId)).toHaveLength(1);
    expect(fake.requests.filter((r) => r.idempotencyKey === k).map((r) => r.replayed)).toEqual([false, true]);
    // A declined charge replays its decline too (the stored 402).
    const d = await customerWith(stripe, 'pm_card_chargeDeclined');
    const dk = key();
    expect((await stripe.charge(chargeInput(d), dk)).gatewayPaymentId).toBe((await stripe.charge(chargeInput(d), dk)).gatewayPaymentId);

    const err = await stripe.charge(chargeInput(c, 5000), k).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GatewayRequestError);
    expect(err).toMatchObject({ code: 'idempotency_error', status: 400, gateway: 'stripe' });
  });

  it('maps errors: unknown objects and bad keys are request errors; 5xx, 429, resets and timeouts are "unavailable"', async () => {
    await expect(stripe.retrievePayment('pi_missing')).rejects.toMatchObject({ name: 'GatewayRequestError', code: 'resource_missing', status: 404 });
    const badKey = createStripeGateway({ secretKey: 'sk_test_wrong', apiBase: fake.url });
    await expect(badKey.retrievePayment('pi_x')).rejects.toMatchObject({ name: 'GatewayRequestError', status: 401 });
    // The SDK itself retries a closed connection once (same key): two resets to see the error.
    for (const [kind, times] of [['http500', 1], ['rate_limit', 1], ['reset', 2]] as const) {
      fake.fail(times, kind);
      const err = await stripe.retrievePayment('pi_x').catch((e: unknown) => e);
      expect(err, kind).toBeInstanceOf(GatewayUnavailableError);
    }
    const slow = createStripeGateway({ secretKey: 'sk_test_plinth', apiBase: fake.url, timeoutMs: 100 });
    fake.fail(1, 'delay', { delayMs: 250 });
    await expect(slow.retrievePayment('pi_x')).rejects.toBeInstanceOf(GatewayUnavailableError);
  });
});

describe('guardedGateway: the payment DestinationPolicy around the adapter', () => {
  const policy = (over: Partial<Parameters<typeof createDestinationPolicy>[0]> = {}) =>
    createDestinationPolicy({
      name: 'payment-test',
      timeoutMs: 150,
      retries: OUTBOUND_LIMITS.payment.retries,
      retryInitialDelayMs: 5,
      retryMaxDelayMs: 20,
      breaker: { threshold: 3, halfOpenAfterMs: 60_000 },
      bulkhead: { limit: 5, queue: 5 },
      perTenantLimit: 5,
      global: { limit: 10, queue: 10 },
      ...over,
    });

  it('retries a lost answer or a timeout with the same key: exactly one PaymentIntent at the gateway', async () => {
    const guarded = guardedGateway(stripe, policy());
    const c = await customerWith(stripe, 'pm_card_visa');
    // reset_after_work twice: the SDK's own one retry of a closed connection meets the second reset, so the
    // policy's retry is the one that finds the stored result.
    for (const fault of [{ kind: 'reset_after_work' as const, times: 2 }, { kind: 'delay' as const, times: 1, delayMs: 250 }, { kind: 'http500' as const, times: 1 }]) {
      // Scoped to this charge's key: the SDK's own late retry of the previous (abandoned, delayed) call would
      // otherwise take the fault meant for this one.
      const k = key();
      fake.fail(fault.times, fault.kind, { path: '/v1/payment_intents', delayMs: 'delayMs' in fault ? fault.delayMs : undefined, idempotencyKey: k });
      const paid = await guarded.charge(chargeInput(c), k);
      expect(paid.status, fault.kind).toBe('succeeded');
      const sent = fake.requests.filter((r) => r.idempotencyKey === k);
      expect(sent.length, fault.kind).toBe(fault.times + 1);
      expect(sent.at(-1)!.replayed, fault.kind).toBe(fault.kind !== 'http500'); // a 500 stored nothing: the retry ran it
      expect([...fake.paymentIntents.values()].filter((p) => p.metadata.attemptId === 'att_1' && p.id === paid.gatewayPaymentId)).toHaveLength(1);
      // Every retry carried the same key; one intent was created for it.
      const created = [...new Set(sent.map((r) => r.idempotencyKey))];
      expect(created).toEqual([k]);
    }
    const intents = [...fake.paymentIntents.values()].filter((p) => p.customer === c.gatewayCustomerId);
    expect(intents).toHaveLength(3);
  });

  it('never retries a request error, and does not count it against the breaker', async () => {
    const p = policy();
    const guarded = guardedGateway(stripe, p);
    for (let i = 0; i < 5; i++) await expect(guarded.retrievePayment('pi_nope')).rejects.toBeInstanceOf(GatewayRequestError);
    expect(fake.requests.filter((r) => r.path === '/v1/payment_intents/pi_nope')).toHaveLength(5);
    expect(p.breakerState('gateway:stripe')).toBe('closed');
  });

  it('opens the breaker after consecutive failures (then fails fast without calling), and the bulkhead refuses beyond its limit', async () => {
    const p = policy({ retries: 0 });
    const guarded = guardedGateway(stripe, p);
    fake.fail(3, 'http500', { path: '/v1/payment_intents/pi_breaker' });
    for (let i = 0; i < 3; i++) await expect(guarded.retrievePayment('pi_breaker')).rejects.toBeInstanceOf(GatewayUnavailableError);
    expect(p.breakerState('gateway:stripe')).toBe('open');
    const before = fake.requests.length;
    await expect(guarded.retrievePayment('pi_breaker')).rejects.toThrow(/circuit breaker is open/);
    expect(fake.requests.length).toBe(before);

    const narrow = guardedGateway(stripe, policy({ retries: 0, bulkhead: { limit: 1, queue: 0 }, timeoutMs: 1_000 }));
    fake.fail(1, 'delay', { delayMs: 200, path: '/v1/payment_intents/pi_slow' });
    const slow = narrow.retrievePayment('pi_slow').catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 30));
    await expect(narrow.retrievePayment('pi_other')).rejects.toThrow(/bulkhead is full/);
    expect(await slow).toBeInstanceOf(GatewayRequestError); // the slow one went through (and found nothing)
  });
});
