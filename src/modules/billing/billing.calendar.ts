/**
 * Billing periods in UTC, anchored to the subscription's start: period k begins k intervals after the
 * anchor, on the anchor's day of month clamped to the month's length, at the anchor's time of day. The
 * anchor is never replaced by a clamped date, so Jan 31 → Feb 28 (29 in a leap year) → Mar 31 → Apr 30.
 */
export type Interval = 'month' | 'year';

const monthsOf = (interval: Interval) => (interval === 'year' ? 12 : 1);

function daysInMonth(year: number, month: number): number {
  return new Date(Date.UTC(year, month + 1, 0)).getUTCDate();
}

/** The anchor moved by `months` calendar months (day clamped), in UTC. */
export function addMonthsAnchored(anchor: Date, months: number): Date {
  const y = anchor.getUTCFullYear();
  const m = anchor.getUTCMonth() + months;
  const year = y + Math.floor(m / 12);
  const month = ((m % 12) + 12) % 12;
  const day = Math.min(anchor.getUTCDate(), daysInMonth(year, month));
  return new Date(Date.UTC(year, month, day, anchor.getUTCHours(), anchor.getUTCMinutes(), anchor.getUTCSeconds(), anchor.getUTCMilliseconds()));
}

/** Start of period `k` (k = 0 is the anchor itself). */
export function periodBoundary(anchor: Date, interval: Interval, k: number): Date {
  return addMonthsAnchored(anchor, k * monthsOf(interval));
}

export interface Period {
  index: number;
  start: Date;
  end: Date;
}

/** The period that contains `at` (at ≥ anchor); boundaries belong to the period they start. */
export function periodAt(anchor: Date, interval: Interval, at: Date): Period {
  if (at.getTime() < anchor.getTime()) throw new RangeError('a billing period cannot start before its anchor');
  const step = monthsOf(interval);
  const months = (at.getUTCFullYear() - anchor.getUTCFullYear()) * 12 + (at.getUTCMonth() - anchor.getUTCMonth());
  let k = Math.max(0, Math.floor(months / step) - 1);
  while (periodBoundary(anchor, interval, k + 1).getTime() <= at.getTime()) k++;
  while (k > 0 && periodBoundary(anchor, interval, k).getTime() > at.getTime()) k--;
  return { index: k, start: periodBoundary(anchor, interval, k), end: periodBoundary(anchor, interval, k + 1) };
}

/** `at` plus whole days (trials). */
export function addDays(at: Date, days: number): Date {
  return new Date(at.getTime() + days * 86_400_000);
}
