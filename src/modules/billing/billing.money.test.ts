import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { addMonthsAnchored, periodAt, periodBoundary } from './billing.calendar.ts';
import { allocate, currencyExponent, formatMoney, portionAt, prorate, shareOf } from './billing.money.ts';
import { amountFor, validatePricing, type Pricing } from './billing.pricing.ts';

const amount = fc.integer({ min: -1_000_000_000_000, max: 1_000_000_000_000 });
const price = fc.integer({ min: 0, max: 100_000_000_000 });
const START = Date.UTC(2024, 0, 31, 10, 0, 0);
/** A period [start, end) and ordered instants inside it. */
const periodWith = (n: number) =>
  fc
    .tuple(fc.integer({ min: 0, max: 5 * 365 * 86_400_000 }), fc.integer({ min: 1, max: 400 * 86_400_000 }), fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: n, maxLength: n }))
    .map(([offset, length, fractions]) => {
      const start = new Date(START + offset);
      const end = new Date(start.getTime() + length);
      const cuts = fractions.map((f) => new Date(start.getTime() + Math.floor(f * length))).sort((a, b) => a.getTime() - b.getTime());
      return { start, end, cuts };
    });

describe('money: ISO 4217 minor units', () => {
  it('knows each currency exponent, zero-decimal and three-decimal ones included, and refuses non-money codes', () => {
    expect(currencyExponent('USD')).toBe(2);
    expect(currencyExponent('EUR')).toBe(2);
    expect(currencyExponent('JPY')).toBe(0);
    expect(currencyExponent('KRW')).toBe(0);
    expect(currencyExponent('KWD')).toBe(3);
    for (const bad of ['XXX', 'XAU', 'XTS', 'usd', 'US', 'ABC', '']) expect(currencyExponent(bad), bad).toBeUndefined();
    expect(formatMoney({ amount: 1234, currency: 'USD' })).toBe('12.34 USD');
    expect(formatMoney({ amount: -5, currency: 'USD' })).toBe('-0.05 USD');
    expect(formatMoney({ amount: 1200, currency: 'JPY' })).toBe('1200 JPY');
    expect(formatMoney({ amount: 1234, currency: 'KWD' })).toBe('1.234 KWD');
  });

  it('allocate (largest remainder): parts sum to the total exactly, each within one unit of its exact share, deterministic', () => {
    fc.assert(
      fc.property(amount, fc.array(fc.integer({ min: 0, max: 1_000_000 }), { minLength: 1, maxLength: 20 }).filter((w) => w.some((x) => x > 0)), (total, weights) => {
        const parts = allocate(total, weights);
        expect(parts.reduce((a, b) => a + b, 0)).toBe(total);
        const sum = weights.reduce((a, b) => a + b, 0);
        parts.forEach((p, i) => {
          const exact = (total * weights[i]!) / sum;
          expect(Math.abs(p - exact)).toBeLessThan(1 + 1e-6 * Math.abs(total));
        });
        expect(allocate(total, weights)).toEqual(parts);
      }),
    );
    expect(allocate(100, [1, 1, 1])).toEqual([34, 33, 33]);
    expect(allocate(-100, [1, 1, 1])).toEqual([-34, -33, -33]);
    expect(() => allocate(1.5, [1])).toThrow(RangeError);
    expect(() => allocate(1, [0, 0])).toThrow(RangeError);
    expect(() => allocate(1, [-1, 2])).toThrow(RangeError);
  });

  it('prorating a period at any cuts creates or loses no minor unit: the shares of the pieces sum to the amount', () => {
    fc.assert(
      fc.property(price, periodWith(6), (p, { start, end, cuts }) => {
        const points = [start, ...cuts, end];
        let sum = 0;
        for (let i = 0; i + 1 < points.length; i++) {
          const s = shareOf(p, start, end, points[i]!, points[i + 1]!);
          expect(s).toBeGreaterThanOrEqual(0);
          sum += s;
        }
        expect(sum).toBe(p);
      }),
    );
  });

  it('a full cycle of upgrade then downgrade charges exactly what the customer used of each price', () => {
    fc.assert(
      fc.property(price, price, periodWith(2), (oldP, newP, { start, end, cuts: [t1, t2] }) => {
        // Paid the old price in advance; upgrade at t1 (credit unused old, charge remaining new); back at t2.
        const lines = [...prorate(oldP, newP, start, end, t1!), ...prorate(newP, oldP, start, end, t2!)];
        const charged = oldP + lines.reduce((a, l) => a + l.amount, 0);
        const used = shareOf(oldP, start, end, start, t1!) + shareOf(newP, start, end, t1!, t2!) + shareOf(oldP, start, end, t2!, end);
        expect(charged).toBe(used);
        // Recomputation is deterministic.
        expect([...prorate(oldP, newP, start, end, t1!), ...prorate(newP, oldP, start, end, t2!)]).toEqual(lines);
      }),
    );
  });

  it('proration of a real month: half of February 2024 at 29 USD', () => {
    const start = new Date('2024-02-01T00:00:00Z');
    const end = new Date('2024-03-01T00:00:00Z');
    const mid = new Date('2024-02-15T12:00:00Z');
    expect(portionAt(2900, start, end, mid)).toBe(1450);
    expect(prorate(2900, 9900, start, end, mid)).toEqual([
      { kind: 'proration_credit', amount: -1450, periodStart: mid, periodEnd: end },
      { kind: 'proration_charge', amount: 4950, periodStart: mid, periodEnd: end },
    ]);
    expect(prorate(1000, 1000, start, end, end)).toEqual([]);
  });
});

describe('calendar: UTC periods anchored to the start day', () => {
  it('Jan 31 → Feb 29 (leap) → Mar 31 → Apr 30, and Feb 28 in a common year; yearly from Feb 29', () => {
    const anchor = new Date('2024-01-31T09:30:00Z');
    expect([1, 2, 3, 13].map((k) => periodBoundary(anchor, 'month', k).toISOString())).toEqual([
      '2024-02-29T09:30:00.000Z',
      '2024-03-31T09:30:00.000Z',
      '2024-04-30T09:30:00.000Z',
      '2025-02-28T09:30:00.000Z',
    ]);
    const leap = new Date('2024-02-29T00:00:00Z');
    expect([1, 4].map((k) => periodBoundary(leap, 'year', k).toISOString())).toEqual(['2025-02-28T00:00:00.000Z', '2028-02-29T00:00:00.000Z']);
    expect(addMonthsAnchored(new Date('2024-03-31T00:00:00Z'), -1).toISOString()).toBe('2024-02-29T00:00:00.000Z');
  });

  it('periodAt finds the one period containing an instant; periods tile time without gaps or overlaps', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: Date.UTC(2000, 0, 1), max: Date.UTC(2040, 0, 1) }),
        fc.integer({ min: 0, max: 20 * 366 * 86_400_000 }),
        fc.constantFrom('month' as const, 'year' as const),
        (a, offset, interval) => {
          const anchor = new Date(a);
          const at = new Date(a + offset);
          const p = periodAt(anchor, interval, at);
          expect(p.start.getTime()).toBeLessThanOrEqual(at.getTime());
          expect(at.getTime()).toBeLessThan(p.end.getTime());
          expect(p.start).toEqual(periodBoundary(anchor, interval, p.index));
          expect(periodAt(anchor, interval, p.end).start).toEqual(p.end);
          // Day of month is the anchor's, clamped to the month's length.
          const day = p.start.getUTCDate();
          const last = new Date(Date.UTC(p.start.getUTCFullYear(), p.start.getUTCMonth() + 1, 0)).getUTCDate();
          expect(day).toBe(Math.min(anchor.getUTCDate(), last));
        },
      ),
    );
    expect(() => periodAt(new Date('2024-01-01Z'), 'month', new Date('2023-12-31Z'))).toThrow(RangeError);
  });
});

describe('pricing models', () => {
  const base: Pricing = { model: 'flat', flatAmount: 0, unitAmount: 0, tiers: [], packageSize: 1 };
  const tiers = [
    { upTo: 10, unitAmount: 100, flatAmount: 0 },
    { upTo: 100, unitAmount: 50, flatAmount: 500 },
    { upTo: null, unitAmount: 10, flatAmount: 0 },
  ];
  it('flat, per-unit, graduated tiers, volume and package', () => {
    expect(amountFor({ ...base, flatAmount: 2900 }, 7)).toBe(2900);
    expect(amountFor({ ...base, model: 'per_unit', unitAmount: 800 }, 7)).toBe(5600);
    expect(amountFor({ ...base, model: 'tiered', tiers }, 5)).toBe(500);
    expect(amountFor({ ...base, model: 'tiered', tiers }, 150)).toBe(10 * 100 + 90 * 50 + 500 + 50 * 10);
    expect(amountFor({ ...base, model: 'volume', tiers }, 150)).toBe(1500);
    expect(amountFor({ ...base, model: 'volume', tiers }, 50)).toBe(50 * 50 + 500);
    expect(amountFor({ ...base, model: 'volume', tiers }, 0)).toBe(0);
    expect(amountFor({ ...base, model: 'package', unitAmount: 200, packageSize: 1000 }, 1001)).toBe(400);
    expect(amountFor({ ...base, model: 'package', unitAmount: 200, packageSize: 1000 }, 0)).toBe(0);
    expect(() => amountFor(base, -1)).toThrow(RangeError);
  });
  it('graduated tiers never decrease as quantity grows', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 100_000 }), (q) => {
        expect(amountFor({ ...base, model: 'tiered', tiers }, q + 1)).toBeGreaterThanOrEqual(amountFor({ ...base, model: 'tiered', tiers }, q));
      }),
    );
  });
  it('rejects malformed prices', () => {
    expect(validatePricing({ ...base, model: 'tiered' })).toMatch(/at least one tier/);
    expect(validatePricing({ ...base, model: 'tiered', tiers: [{ upTo: null, unitAmount: 1, flatAmount: 0 }, { upTo: 5, unitAmount: 1, flatAmount: 0 }] })).toMatch(/last tier/);
    expect(validatePricing({ ...base, model: 'tiered', tiers: [{ upTo: 5, unitAmount: 1, flatAmount: 0 }, { upTo: 5, unitAmount: 1, flatAmount: 0 }, { upTo: null, unitAmount: 1, flatAmount: 0 }] })).toMatch(/increase/);
    expect(validatePricing({ ...base, model: 'package', packageSize: 0 })).toMatch(/packageSize/);
    expect(validatePricing({ ...base, flatAmount: 1.5 })).toMatch(/flatAmount/);
    expect(validatePricing({ ...base, model: 'volume', tiers })).toBeNull();
  });
});
