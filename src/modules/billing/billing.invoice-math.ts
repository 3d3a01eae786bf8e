import { allocate } from './billing.money.ts';
import type { DiscountSnapshot, TaxSnapshot } from './invoices.repo.ts';

/**
 * The arithmetic of an invoice, pure and deterministic (finalization and `plinth billing verify` run the
 * same code): a discount is computed on the positive lines and split over them by largest remainder; tax
 * is computed per line on its amount after discount, rounded half away from zero; totals are sums.
 */

const PPM = 1_000_000n;

/** round(n / d) half away from zero, in bigint. */
function divRound(n: bigint, d: bigint): bigint {
  const neg = n < 0n !== d < 0n;
  const an = n < 0n ? -n : n;
  const ad = d < 0n ? -d : d;
  const q = (an * 2n + ad) / (ad * 2n);
  return neg ? -q : q;
}

export interface MathLine {
  amount: number;
}

export interface InvoiceTotals {
  lines: Array<{ discountAmount: number; taxAmount: number }>;
  subtotal: number;
  discountTotal: number;
  taxTotal: number;
  total: number;
}

/** The discount of each line (non-negative; credits get none). A fixed discount in another currency is 0. */
export function discountLines(lines: MathLine[], discount: DiscountSnapshot | null, currency: string): number[] {
  const out = lines.map(() => 0);
  if (!discount) return out;
  const positive = lines.map((l) => Math.max(0, l.amount));
  const base = positive.reduce((a, b) => a + b, 0);
  if (base <= 0) return out;
  let total: number;
  if (discount.percentOffPpm !== null) total = Number(divRound(BigInt(base) * BigInt(discount.percentOffPpm), PPM));
  else if (discount.amountOff !== null && discount.currency === currency) total = Math.min(discount.amountOff, base);
  else return out;
  if (total <= 0) return out;
  return allocate(total, positive);
}

/** Tax of one line's net amount: added on top (exclusive) or the part of it that is tax (inclusive). */
export function taxOf(net: number, tax: TaxSnapshot | null): number {
  if (!tax || tax.percentagePpm === 0 || net === 0) return 0;
  const n = BigInt(net);
  const r = BigInt(tax.percentagePpm);
  if (!tax.inclusive) return Number(divRound(n * r, PPM));
  return Number(n - divRound(n * PPM, PPM + r));
}

export function computeTotals(lines: MathLine[], discount: DiscountSnapshot | null, tax: TaxSnapshot | null, currency: string): InvoiceTotals {
  const discounts = discountLines(lines, discount, currency);
  const out = lines.map((l, i) => ({ discountAmount: discounts[i]!, taxAmount: taxOf(l.amount - discounts[i]!, tax) }));
  const subtotal = lines.reduce((a, l) => a + l.amount, 0);
  const discountTotal = discounts.reduce((a, b) => a + b, 0);
  const taxTotal = out.reduce((a, l) => a + l.taxAmount, 0);
  const total = subtotal - discountTotal + (tax && !tax.inclusive ? taxTotal : 0);
  return { lines: out, subtotal, discountTotal, taxTotal, total };
}
