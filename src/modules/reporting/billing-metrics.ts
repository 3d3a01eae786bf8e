/**
 * Billing metrics from subscription history (pure: no database). A subscription's recurring revenue over
 * time comes from its charges, which carry billing time (the org's test clock when it has one): every
 * `subscription` or `proration_charge` starts a segment at its period start with the MRR of its price and
 * quantity; the next charge of any kind (a renewal, an upgrade's credit + charge, a cancellation's credit)
 * ends it. The last segment runs on while the subscription is live and renewing (active, past_due), ends at
 * its period end when it cancels at period end or was canceled, and at the pause when paused. Trials carry
 * no charge, so no MRR: their conversion is a `new` movement.
 *
 * Money: integers in minor units, per currency, never summed across currencies. A yearly price counts
 * amount / 12 toward MRR (rounded half up to the minor unit, per subscription); ARR is exact (yearly amount,
 * or 12 × a monthly amount).
 */

export interface SubscriptionFact {
  tenantId: string;
  id: string;
  planId: string;
  status: string;
  currency: string;
  trialEnd: Date | null;
  pausedAt: Date | null;
  cancelAtPeriodEnd: boolean;
  /** The org's "now" (its test clock, else the wall clock): nothing after it has happened yet. */
  now: Date;
}

export interface ChargeFact {
  subscriptionId: string;
  kind: 'subscription' | 'proration_charge' | 'proration_credit';
  start: Date;
  end: Date;
  planId: string;
  /** Recurring amounts of the charge's price and quantity (0 for metered prices). */
  mrr: number;
  arr: number;
}

export interface Movement {
  tenantId: string;
  subscriptionId: string;
  at: Date;
  currency: string;
  kind: 'new' | 'expansion' | 'contraction' | 'churned';
  /** Positive: the size of the movement (a contraction or churn of 100 is 100). */
  amount: number;
  mrrBefore: number;
  mrrAfter: number;
}

interface Segment {
  start: number;
  end: number;
  mrr: number;
  arr: number;
  planId: string;
}

/** The monthly and annual recurring amounts of a price's amount per interval. */
export function recurring(amount: number, interval: string): { mrr: number; arr: number } {
  if (interval === 'year') return { mrr: Math.floor((amount + 6) / 12), arr: amount };
  return { mrr: amount, arr: amount * 12 };
}

/** A subscription's revenue segments, in time order, none after its org's now. */
export function segmentsOf(sub: SubscriptionFact, charges: ChargeFact[]): Segment[] {
  const now = sub.now.getTime();
  const own = charges.filter((c) => c.subscriptionId === sub.id && c.start.getTime() <= now).sort((a, b) => a.start.getTime() - b.start.getTime());
  const starts = own.map((c) => c.start.getTime());
  const opening = own.filter((c) => c.kind !== 'proration_credit');
  const out: Segment[] = [];
  for (const [i, c] of opening.entries()) {
    const s = c.start.getTime();
    const cut = starts.find((t) => t > s);
    let end = Math.min(c.end.getTime(), cut ?? Infinity);
    const last = i === opening.length - 1 && cut === undefined;
    if (last) {
      if ((sub.status === 'active' || sub.status === 'past_due') && !sub.cancelAtPeriodEnd) end = Infinity;
      else if (sub.status === 'paused' && sub.pausedAt) end = Math.min(end, Math.max(s, sub.pausedAt.getTime()));
    }
    if (end > s) out.push({ start: s, end, mrr: c.mrr, arr: c.arr, planId: c.planId });
  }
  return out;
}

/** MRR and ARR of a subscription at a time. */
export function valueAt(segments: Segment[], at: number): { mrr: number; arr: number; planId: string | null } {
  const seg = segments.find((s) => s.start <= at && at < s.end);
  return seg ? { mrr: seg.mrr, arr: seg.arr, planId: seg.planId } : { mrr: 0, arr: 0, planId: null };
}

/** Every change of a subscription's MRR up to its org's now: new, expansion, contraction, churned. */
export function movementsOf(sub: SubscriptionFact, segments: Segment[]): Movement[] {
  const now = sub.now.getTime();
  const times = [...new Set(segments.flatMap((s) => [s.start, s.end]))].filter((t) => Number.isFinite(t) && t <= now).sort((a, b) => a - b);
  const out: Movement[] = [];
  for (const t of times) {
    const before = valueAt(segments, t - 1).mrr;
    const after = valueAt(segments, t).mrr;
    if (before === after) continue;
    const kind = before === 0 ? 'new' : after === 0 ? 'churned' : after > before ? 'expansion' : 'contraction';
    out.push({ tenantId: sub.tenantId, subscriptionId: sub.id, at: new Date(t), currency: sub.currency, kind, amount: Math.abs(after - before), mrrBefore: before, mrrAfter: after });
  }
  return out;
}

/** UTC calendar months overlapping [from, to): their first instants. */
export function monthsIn(from: Date, to: Date): Date[] {
  const out: Date[] = [];
  let m = new Date(Date.UTC(from.getUTCFullYear(), from.getUTCMonth(), 1));
  while (m < to) {
    out.push(m);
    m = new Date(Date.UTC(m.getUTCFullYear(), m.getUTCMonth() + 1, 1));
  }
  return out;
}

export const monthKey = (d: Date) => d.toISOString().slice(0, 7);

/** A ratio as a decimal string with 4 places (exact inputs; rounding only here), null when undefined. */
export function rate(part: number, whole: number): string | null {
  if (whole === 0) return null;
  return (Math.round((part / whole) * 10_000) / 10_000).toFixed(4);
}
