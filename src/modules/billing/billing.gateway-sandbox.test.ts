import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GatewayRequestError, GatewayUnavailableError } from './billing.gateway.ts';
import { createSandboxGateway } from './billing.gateway-sandbox.ts';
import { computeTotals, discountLines, taxOf } from './billing.invoice-math.ts';
import { jitterMs } from './use-cases/dunning.ts';
import { attemptIdOf } from './use-cases/payments.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-sandbox-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

async function customerWith(g: ReturnType<typeof createSandboxGateway>, card: string) {
  const { gatewayCustomerId } = await g.createCustomer({ orgId: 'org-1', email: null, name: 'Org' }, `cus-${card}`);
  const pm = await g.attachPaymentMethod({ gatewayCustomerId, paymentMethod: card }, `pm-${card}`);
  return { gatewayCustomerId, paymentMethodId: pm.paymentMethodId, pm };
}
const charge = (c: { gatewayCustomerId: string; paymentMethodId: string }, amount = 1000) => ({ ...c, amount, currency: 'USD', description: 'Invoice 1', metadata: { invoiceId: 'inv-1' } });

describe('sandbox payment gateway', () => {
  it("Stripe's test cards give Stripe's outcomes", async () => {
    const g = createSandboxGateway();
    const cases: Array<[string, string, string | undefined]> = [
      ['4242424242424242', 'succeeded', undefined],
      ['4000000000000002', 'failed', 'card_declined'],
      ['4000000000009995', 'failed', 'insufficient_funds'],
      ['4000002500003155', 'requires_action', 'authentication_required'],
      ['4000000000000119', 'failed', 'processing_error'],
      ['tok_visa', 'succeeded', undefined],
    ];
    for (const [card, status, code] of cases) {
      const c = await customerWith(g, card);
      const p = await g.charge(charge(c), `charge-${card}`);
      expect([card, p.status, p.failureCode]).toEqual([card, status, code]);
    }
    expect((await customerWith(g, '4242 4242 4242 4242')).pm).toMatchObject({ brand: 'visa', last4: '4242' });
    await expect(customerWith(g, '4111111111111112')).rejects.toMatchObject({ code: 'resource_missing' });
  });

  it('idempotency keys: the same key is the same payment; other parameters under it are refused', async () => {
    const g = createSandboxGateway();
    const c = await customerWith(g, '4242424242424242');
    const a = await g.charge(charge(c), 'k1');
    const b = await g.charge(charge(c), 'k1');
    expect(b.gatewayPaymentId).toBe(a.gatewayPaymentId);
    expect(g.payments()).toHaveLength(1);
    await expect(g.charge(charge(c, 2000), 'k1')).rejects.toBeInstanceOf(GatewayRequestError);
    await expect(g.charge(charge(c, 0), 'k2')).rejects.toMatchObject({ code: 'parameter_invalid_integer' });
  });

  it('a timeout after the charge: the retry with the key learns the outcome, and there is one charge', async () => {
    const g = createSandboxGateway();
    const c = await customerWith(g, 'tok_sandbox_timeout');
    await expect(g.charge(charge(c), 'k-timeout')).rejects.toBeInstanceOf(GatewayUnavailableError);
    const again = await g.charge(charge(c), 'k-timeout');
    expect(again.status).toBe('succeeded');
    expect(g.payments()).toHaveLength(1);
  });

  it('delayed payments settle on retrieve; refunds are bounded by what was charged', async () => {
    let now = 1_000;
    const g = createSandboxGateway({ settleAfterMs: 500, now: () => now });
    const c = await customerWith(g, 'tok_sandbox_delayed');
    const p = await g.charge(charge(c), 'k-delayed');
    expect(p.status).toBe('processing');
    expect((await g.retrievePayment(p.gatewayPaymentId)).status).toBe('processing');
    now += 600;
    expect((await g.retrievePayment(p.gatewayPaymentId)).status).toBe('succeeded');
    expect(await g.refund({ gatewayPaymentId: p.gatewayPaymentId, amount: 400 }, 'r1')).toMatchObject({ amount: 400, status: 'succeeded' });
    await expect(g.refund({ gatewayPaymentId: p.gatewayPaymentId, amount: 700 }, 'r2')).rejects.toMatchObject({ code: 'amount_too_large' });
    expect((await g.retrievePayment(p.gatewayPaymentId)).amountRefunded).toBe(400);
    await expect(g.retrievePayment('pi_nope')).rejects.toMatchObject({ code: 'resource_missing' });
  });

  it('a restart forgets no charge: state is replayed from the file (a torn last line is ignored)', async () => {
    const file = path.join(dir, 'sandbox.jsonl');
    const g1 = createSandboxGateway({ file });
    const c = await customerWith(g1, '4242424242424242');
    const first = await g1.charge(charge(c), 'k-persist');
    fs.appendFileSync(file, '{"t":"payment","p":{"gatewayPay');
    const g2 = createSandboxGateway({ file });
    expect(g2.payments().map((p) => p.gatewayPaymentId)).toEqual([first.gatewayPaymentId]);
    expect((await g2.charge(charge(c), 'k-persist')).gatewayPaymentId).toBe(first.gatewayPaymentId);
    expect((await g2.retrievePayment(first.gatewayPaymentId)).status).toBe('succeeded');
    expect(g2.payments()).toHaveLength(1);
  });
});

describe('invoice arithmetic', () => {
  const tax = (ppm: number, inclusive: boolean) => ({ taxRateId: 'x', name: 'VAT', country: 'DE', region: '', percentagePpm: ppm, inclusive });
  const pct = (ppm: number) => ({ customerDiscountId: 'd', couponId: 'c', key: 'k', name: 'n', percentOffPpm: ppm, amountOff: null, currency: null, duration: 'once' as const, promotionCode: null });

  it('discounts split over positive lines by largest remainder; credits get none; a fixed amount is capped', () => {
    expect(discountLines([{ amount: 1000 }, { amount: 333 }, { amount: -500 }], pct(100_000), 'USD')).toEqual([100, 33, 0]);
    expect(discountLines([{ amount: 1000 }], { ...pct(0), percentOffPpm: null, amountOff: 5000, currency: 'USD' }, 'USD')).toEqual([1000]);
    expect(discountLines([{ amount: 1000 }], { ...pct(0), percentOffPpm: null, amountOff: 500, currency: 'EUR' }, 'USD')).toEqual([0]);
  });

  it('tax: exclusive on top, inclusive the part contained, half away from zero, symmetric for credits', () => {
    expect(taxOf(1000, tax(190_000, false))).toBe(190);
    expect(taxOf(1190, tax(190_000, true))).toBe(190);
    expect(taxOf(-1000, tax(190_000, false))).toBe(-190);
    expect(taxOf(5, tax(100_000, false))).toBe(1); // 0.5 rounds away from zero
    expect(computeTotals([{ amount: 10000 }], pct(100_000), tax(190_000, false), 'USD')).toMatchObject({ subtotal: 10000, discountTotal: 1000, taxTotal: 1710, total: 10710 });
    expect(computeTotals([{ amount: 1250 }], null, tax(88_750, true), 'USD')).toMatchObject({ total: 1250, taxTotal: 102 });
  });

  it('dunning jitter stays within its bound and is the same on every computation; attempt ids are stable and ordered', () => {
    for (let i = 1; i < 50; i++) {
      const j = jitterMs(`inv-${i}`, i, 60);
      expect(Math.abs(j)).toBeLessThanOrEqual(3_600_000);
      expect(jitterMs(`inv-${i}`, i, 60)).toBe(j);
    }
    const inv = '01a232e2-50f1-7a7b-8fd7-fa09dae8c60b';
    expect(attemptIdOf(inv, 1)).toBe(attemptIdOf(inv, 1));
    expect(attemptIdOf(inv, 1) < attemptIdOf(inv, 2) && attemptIdOf(inv, 2) < attemptIdOf(inv, 10)).toBe(true);
    expect(attemptIdOf(inv, 2)).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});
