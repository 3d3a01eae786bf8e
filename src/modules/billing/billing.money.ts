import { code as currencyRecord } from 'currency-codes';

/**
 * Money as integer minor units of an ISO 4217 currency (cents for USD, yen for JPY, fils for KWD).
 * Amounts never pass through floating point: proration is rational arithmetic on bigint, rounded once
 * per boundary by largest remainder, so splitting an amount can neither create nor lose a minor unit.
 */
export interface Money {
  /** Integer minor units (negative for a credit); always a safe integer. */
  amount: number;
  currency: string;
}

/** Codes of ISO 4217 that are not money (gold, test code, SDR, "no currency"): not billable. */
const NOT_MONEY = /^X(AU|AG|PT|PD|TS|XX|DR|BA|BB|BC|BD|SU|UA)$/;

/** The currency's minor-unit exponent (USD 2, JPY 0, KWD 3), or undefined when it is not a billable ISO 4217 code. */
export function currencyExponent(currency: string): number | undefined {
  if (!/^[A-Z]{3}$/.test(currency) || NOT_MONEY.test(currency)) return undefined;
  const rec = currencyRecord(currency);
  return rec && Number.isInteger(rec.digits) ? rec.digits : undefined;
}

export function isCurrency(currency: string): boolean {
  return currencyExponent(currency) !== undefined;
}

/** "12.34 USD", "1200 JPY", "1.234 KWD": for e-mails and error details, never for arithmetic. */
export function formatMoney(m: Money): string {
  const exp = currencyExponent(m.currency) ?? 2;
  const sign = m.amount < 0 ? '-' : '';
  const abs = BigInt(Math.abs(m.amount));
  if (exp === 0) return `${sign}${abs} ${m.currency}`;
  const unit = 10n ** BigInt(exp);
  return `${sign}${abs / unit}.${(abs % unit).toString().padStart(exp, '0')} ${m.currency}`;
}

export function assertMinor(amount: number, what = 'amount'): number {
  if (!Number.isSafeInteger(amount)) throw new RangeError(`${what} must be an integer number of minor units, got ${amount}`);
  return amount;
}

/**
 * Splits `total` minor units in proportion to `weights` (non-negative integers, not all zero) by the
 * largest-remainder method: each part gets the floor of its exact share, and the minor units left over
 * go one each to the parts with the largest fractional remainders (ties to the earlier part). The parts
 * always sum to `total` exactly, and the result depends only on the inputs (deterministic).
 */
export function allocate(total: number, weights: readonly (number | bigint)[]): number[] {
  assertMinor(total, 'total');
  const w = weights.map((x) => BigInt(x));
  if (w.length === 0) throw new RangeError('allocate needs at least one weight');
  if (w.some((x) => x < 0n)) throw new RangeError('weights must be non-negative');
  const sum = w.reduce((a, b) => a + b, 0n);
  if (sum === 0n) throw new RangeError('weights must not all be zero');
  const neg = total < 0;
  const t = BigInt(Math.abs(total));
  const parts = w.map((x) => (t * x) / sum);
  const rema = w.map((x, i) => ({ i, r: (t * x) % sum }));
  let left = t - parts.reduce((a, b) => a + b, 0n);
  rema.sort((a, b) => (a.r === b.r ? a.i - b.i : a.r > b.r ? -1 : 1));
  for (const { i } of rema) {
    if (left === 0n) break;
    parts[i]! += 1n;
    left -= 1n;
  }
  return parts.map((p) => Number(neg ? -p : p));
}

/**
 * The part of `amount` that covers [start, at) of the period [start, end): the first share of a
 * two-way largest-remainder split of the amount at `at`. The share of any interval [a, b) is
 * `portionAt(b) - portionAt(a)`, so the shares of consecutive intervals telescope: however often a
 * period is cut (upgrade, downgrade, cancel), its pieces sum to the amount exactly.
 */
export function portionAt(amount: number, start: Date, end: Date, at: Date): number {
  const s = BigInt(start.getTime());
  const e = BigInt(end.getTime());
  if (e <= s) throw new RangeError('period end must be after its start');
  const x = BigInt(Math.min(Math.max(at.getTime(), start.getTime()), end.getTime()));
  if (x === s) return 0;
  if (x === e) return amount;
  return allocate(amount, [x - s, e - x])[0]!;
}

/** The share of `amount` (billed for [start, end)) that covers [from, to). */
export function shareOf(amount: number, start: Date, end: Date, from: Date, to: Date): number {
  return portionAt(amount, start, end, to) - portionAt(amount, start, end, from);
}

export interface ProrationLine {
  kind: 'proration_credit' | 'proration_charge';
  amount: number;
  periodStart: Date;
  periodEnd: Date;
}

/**
 * Switching at `at` from a price of `oldAmount` to `newAmount` for the period [start, end), the old one
 * paid in advance: a credit for the old price's unused part and a charge for the new price's remaining
 * part. Zero lines are left out. Both computed with `portionAt`, so a full cycle of changes sums to the
 * shares actually used.
 */
export function prorate(oldAmount: number, newAmount: number, start: Date, end: Date, at: Date): ProrationLine[] {
  const unusedOld = oldAmount - portionAt(oldAmount, start, end, at);
  const remainingNew = newAmount - portionAt(newAmount, start, end, at);
  const from = new Date(Math.min(Math.max(at.getTime(), start.getTime()), end.getTime()));
  const lines: ProrationLine[] = [];
  if (unusedOld !== 0) lines.push({ kind: 'proration_credit', amount: -unusedOld, periodStart: from, periodEnd: end });
  if (remainingNew !== 0) lines.push({ kind: 'proration_charge', amount: remainingNew, periodStart: from, periodEnd: end });
  return lines;
}
