import { sql, type Kysely, type Selectable, type Transaction } from 'kysely';
import type { Database, DB, DbScope } from '../../platform/db/database.ts';
import type { Trx } from './billing.repo.ts';
import type { Charge } from './subscriptions.repo.ts';

/** Billing I's tables plus those of invoices and payments (migration 0082). */
export type InvoicingTables = Pick<
  DB,
  | 'billing_products'
  | 'billing_plans'
  | 'billing_prices'
  | 'billing_meters'
  | 'billing_customers'
  | 'billing_subscriptions'
  | 'billing_charges'
  | 'billing_test_clocks'
  | 'billing_schedule'
  | 'billing_usage_events'
  | 'billing_invoices'
  | 'billing_invoice_lines'
  | 'billing_invoice_sequences'
  | 'billing_invoice_orgs'
  | 'billing_usage_cursors'
  | 'billing_payment_methods'
  | 'billing_payment_attempts'
  | 'billing_payment_index'
  | 'billing_dunning_schedule'
  | 'billing_coupons'
  | 'billing_promotion_codes'
  | 'billing_customer_discounts'
  | 'billing_tax_rates'
  | 'billing_credit_notes'
  | 'billing_customer_balances'
  | 'billing_balance_transactions'
>;
export type ITrx = Transaction<InvoicingTables>;
export type IQ = Kysely<InvoicingTables>;

export function invoicingScope(db: Database): DbScope<InvoicingTables> {
  return db.scope(
    'billing_products',
    'billing_plans',
    'billing_prices',
    'billing_meters',
    'billing_customers',
    'billing_subscriptions',
    'billing_charges',
    'billing_test_clocks',
    'billing_schedule',
    'billing_usage_events',
    'billing_invoices',
    'billing_invoice_lines',
    'billing_invoice_sequences',
    'billing_invoice_orgs',
    'billing_usage_cursors',
    'billing_payment_methods',
    'billing_payment_attempts',
    'billing_payment_index',
    'billing_dunning_schedule',
    'billing_coupons',
    'billing_promotion_codes',
    'billing_customer_discounts',
    'billing_tax_rates',
    'billing_credit_notes',
    'billing_customer_balances',
    'billing_balance_transactions',
  );
}

/** The same transaction, seen through Billing I's repo types (a subset of these tables). */
export const asBilling = (trx: ITrx): Trx => trx as unknown as Trx;

const json = <T>(v: unknown): T => (typeof v === 'string' ? JSON.parse(v) : v) as T;
const num = (v: string | number | bigint | null | undefined): number => (v === null || v === undefined ? 0 : Number(v));

// ---------------------------------------------------------------- invoices

export type InvoiceStatus = 'draft' | 'finalized' | 'paid' | 'void' | 'uncollectible';
export type InvoiceReason = 'subscription_create' | 'subscription_cycle' | 'subscription_update' | 'manual';

export interface DiscountSnapshot {
  customerDiscountId: string;
  couponId: string;
  key: string;
  name: string;
  percentOffPpm: number | null;
  amountOff: number | null;
  currency: string | null;
  duration: 'once' | 'repeating' | 'forever';
  promotionCode: string | null;
}

export interface TaxSnapshot {
  taxRateId: string;
  name: string;
  country: string;
  region: string;
  percentagePpm: number;
  inclusive: boolean;
}

export interface Invoice {
  id: string;
  number: string | null;
  seq: number | null;
  status: InvoiceStatus;
  reason: InvoiceReason;
  subscriptionId: string | null;
  currency: string;
  periodStart: Date;
  periodEnd: Date;
  customer: Record<string, unknown>;
  usageCutoff: Date;
  discount: DiscountSnapshot | null;
  tax: TaxSnapshot | null;
  subtotal: number;
  discountTotal: number;
  taxTotal: number;
  total: number;
  creditApplied: number;
  credited: number;
  amountDue: number;
  amountPaid: number;
  attemptCount: number;
  nextPaymentAttemptAt: Date | null;
  pdfKey: string | null;
  createdAt: Date;
  finalizedAt: Date | null;
  paidAt: Date | null;
  voidedAt: Date | null;
  uncollectibleAt: Date | null;
  version: number;
}

export interface UsageComputation {
  metric: string;
  aggregation: 'count' | 'sum' | 'max' | 'unique_count' | 'latest' | 'time_weighted_sum';
  property: string | null;
  /** Events that occurred in [from, to) and were received by `cutoff`, plus late ones (occurred before
   * `from`, received after `previousCutoff`); none older than `lowerBound` can exist (the late window). */
  from: string;
  to: string;
  cutoff: string;
  previousCutoff: string | null;
  lowerBound: string;
  value: string;
  events: number;
  hash: string;
}

export interface LineComputation {
  source: 'charge' | 'usage';
  model: string;
  flatAmount: number;
  unitAmount: number;
  tiers: unknown[];
  packageSize: number;
  quantity: number;
  amount: number;
  usage?: UsageComputation;
}

export interface InvoiceLine {
  id: string;
  invoiceId: string;
  position: number;
  kind: Charge['kind'] | 'usage';
  description: string;
  chargeId: string | null;
  subscriptionId: string | null;
  priceId: string | null;
  priceVersion: number | null;
  quantity: number;
  unitAmount: number | null;
  amount: number;
  discountAmount: number;
  taxAmount: number;
  periodStart: Date;
  periodEnd: Date;
  computation: LineComputation;
}

const toInvoice = (r: Selectable<DB['billing_invoices']>): Invoice => ({
  id: r.id,
  number: r.number ?? null,
  seq: r.seq === null ? null : num(r.seq),
  status: r.status as InvoiceStatus,
  reason: r.reason as InvoiceReason,
  subscriptionId: r.subscription_id ?? null,
  currency: r.currency,
  periodStart: r.period_start,
  periodEnd: r.period_end,
  customer: json(r.customer),
  usageCutoff: r.usage_cutoff,
  discount: r.discount === null ? null : json(r.discount),
  tax: r.tax === null ? null : json(r.tax),
  subtotal: num(r.subtotal),
  discountTotal: num(r.discount_total),
  taxTotal: num(r.tax_total),
  total: num(r.total),
  creditApplied: num(r.credit_applied),
  credited: num(r.credited),
  amountDue: num(r.amount_due),
  amountPaid: num(r.amount_paid),
  attemptCount: r.attempt_count,
  nextPaymentAttemptAt: r.next_payment_attempt_at ?? null,
  pdfKey: r.pdf_key ?? null,
  createdAt: r.created_at,
  finalizedAt: r.finalized_at ?? null,
  paidAt: r.paid_at ?? null,
  voidedAt: r.voided_at ?? null,
  uncollectibleAt: r.uncollectible_at ?? null,
  version: r.version,
});

const toLine = (r: Selectable<DB['billing_invoice_lines']>): InvoiceLine => ({
  id: r.id,
  invoiceId: r.invoice_id,
  position: r.position,
  kind: r.kind as InvoiceLine['kind'],
  description: r.description,
  chargeId: r.charge_id ?? null,
  subscriptionId: r.subscription_id ?? null,
  priceId: r.price_id ?? null,
  priceVersion: r.price_version ?? null,
  quantity: num(r.quantity),
  unitAmount: r.unit_amount === null ? null : num(r.unit_amount),
  amount: num(r.amount),
  discountAmount: num(r.discount_amount),
  taxAmount: num(r.tax_amount),
  periodStart: r.period_start,
  periodEnd: r.period_end,
  computation: json(r.computation),
});

export type NewInvoice = Pick<Invoice, 'id' | 'reason' | 'subscriptionId' | 'currency' | 'periodStart' | 'periodEnd' | 'usageCutoff' | 'subtotal' | 'total' | 'amountDue'>;

export async function insertInvoice(trx: ITrx, tenantId: string, i: NewInvoice): Promise<Invoice> {
  const r = await trx
    .insertInto('billing_invoices')
    .values({
      tenant_id: tenantId,
      id: i.id,
      status: 'draft',
      reason: i.reason,
      subscription_id: i.subscriptionId,
      currency: i.currency,
      period_start: i.periodStart,
      period_end: i.periodEnd,
      usage_cutoff: i.usageCutoff,
      subtotal: i.subtotal,
      total: i.total,
      amount_due: i.amountDue,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  return toInvoice(r);
}

export async function insertLines(trx: ITrx, tenantId: string, lines: InvoiceLine[]): Promise<void> {
  if (lines.length === 0) return;
  await trx
    .insertInto('billing_invoice_lines')
    .values(
      lines.map((l) => ({
        tenant_id: tenantId,
        id: l.id,
        invoice_id: l.invoiceId,
        position: l.position,
        kind: l.kind,
        description: l.description,
        charge_id: l.chargeId,
        subscription_id: l.subscriptionId,
        price_id: l.priceId,
        price_version: l.priceVersion,
        quantity: l.quantity,
        unit_amount: l.unitAmount,
        amount: l.amount,
        discount_amount: l.discountAmount,
        tax_amount: l.taxAmount,
        period_start: l.periodStart,
        period_end: l.periodEnd,
        computation: JSON.stringify(l.computation),
      })),
    )
    .execute();
}

export async function findInvoice(trx: ITrx, tenantId: string, id: string, opts: { forUpdate?: boolean } = {}): Promise<Invoice | undefined> {
  let q = trx.selectFrom('billing_invoices').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id);
  if (opts.forUpdate) q = q.forUpdate();
  const r = await q.executeTakeFirst();
  return r && toInvoice(r);
}

export async function listInvoices(trx: ITrx, tenantId: string, opts: { limit: number; before?: string; status?: InvoiceStatus }): Promise<Invoice[]> {
  let q = trx.selectFrom('billing_invoices').selectAll().where('tenant_id', '=', tenantId);
  if (opts.before) q = q.where('id', '<', opts.before);
  if (opts.status) q = q.where('status', '=', opts.status);
  return (await q.orderBy('id', 'desc').limit(opts.limit).execute()).map(toInvoice);
}

export async function listLines(trx: ITrx, tenantId: string, invoiceId: string): Promise<InvoiceLine[]> {
  const rows = await trx.selectFrom('billing_invoice_lines').selectAll().where('tenant_id', '=', tenantId).where('invoice_id', '=', invoiceId).orderBy('position').execute();
  return rows.map(toLine);
}

export type InvoiceChanges = Partial<
  Pick<
    Invoice,
    | 'status'
    | 'number'
    | 'seq'
    | 'customer'
    | 'discount'
    | 'tax'
    | 'subtotal'
    | 'discountTotal'
    | 'taxTotal'
    | 'total'
    | 'creditApplied'
    | 'credited'
    | 'amountDue'
    | 'amountPaid'
    | 'attemptCount'
    | 'nextPaymentAttemptAt'
    | 'pdfKey'
    | 'finalizedAt'
    | 'paidAt'
    | 'voidedAt'
    | 'uncollectibleAt'
  >
>;

/**
 * The rendered PDF's key, saved only while the invoice is still in the state it was rendered from (no row lock
 * is held while rendering; a render that lost a race with a status change is superseded by the later one).
 */
export async function setPdfKey(trx: ITrx, tenantId: string, id: string, key: string, renderedStatus: string): Promise<boolean> {
  const r = await trx
    .updateTable('billing_invoices')
    .set({ pdf_key: key, version: sql<number>`version + 1`, updated_at: sql`now()` })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .where('status', '=', renderedStatus as Invoice['status'])
    .executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

export async function updateInvoice(trx: ITrx, tenantId: string, id: string, c: InvoiceChanges): Promise<Invoice> {
  const r = await trx
    .updateTable('billing_invoices')
    .set({
      status: c.status,
      number: c.number,
      seq: c.seq,
      customer: c.customer === undefined ? undefined : JSON.stringify(c.customer),
      discount: c.discount === undefined ? undefined : c.discount === null ? null : JSON.stringify(c.discount),
      tax: c.tax === undefined ? undefined : c.tax === null ? null : JSON.stringify(c.tax),
      subtotal: c.subtotal,
      discount_total: c.discountTotal,
      tax_total: c.taxTotal,
      total: c.total,
      credit_applied: c.creditApplied,
      credited: c.credited,
      amount_due: c.amountDue,
      amount_paid: c.amountPaid,
      attempt_count: c.attemptCount,
      next_payment_attempt_at: c.nextPaymentAttemptAt,
      pdf_key: c.pdfKey,
      finalized_at: c.finalizedAt,
      paid_at: c.paidAt,
      voided_at: c.voidedAt,
      uncollectible_at: c.uncollectibleAt,
      version: sql<number>`version + 1`,
      updated_at: sql<Date>`now()`,
    })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirstOrThrow();
  return toInvoice(r);
}

export async function setLineAdjustments(trx: ITrx, tenantId: string, lines: Array<{ id: string; discountAmount: number; taxAmount: number }>): Promise<void> {
  for (const l of lines) {
    await trx.updateTable('billing_invoice_lines').set({ discount_amount: l.discountAmount, tax_amount: l.taxAmount }).where('tenant_id', '=', tenantId).where('id', '=', l.id).execute();
  }
}

export async function deleteDraft(trx: ITrx, tenantId: string, id: string): Promise<void> {
  await trx.updateTable('billing_charges').set({ invoice_id: null }).where('tenant_id', '=', tenantId).where('invoice_id', '=', id).execute();
  await trx.deleteFrom('billing_invoices').where('tenant_id', '=', tenantId).where('id', '=', id).where('status', '=', 'draft').execute();
}

/** The next gap-free number of the org: the row stays locked until the finalizing transaction ends. */
export async function nextInvoiceSeq(trx: ITrx, tenantId: string): Promise<number> {
  const r = await trx
    .insertInto('billing_invoice_sequences')
    .values({ tenant_id: tenantId, last_seq: 1 })
    .onConflict((oc) => oc.column('tenant_id').doUpdateSet({ last_seq: sql<number>`billing_invoice_sequences.last_seq + 1` }))
    .returning('last_seq')
    .executeTakeFirstOrThrow();
  return num(r.last_seq);
}

// ---------------------------------------------------------------- charges (Billing I's rows, collected here)

export async function openCharges(trx: ITrx, tenantId: string): Promise<Charge[]> {
  const rows = await trx.selectFrom('billing_charges').selectAll().where('tenant_id', '=', tenantId).where('invoice_id', 'is', null).orderBy('id').limit(1000).execute();
  return rows.map((r) => ({
    id: r.id,
    subscriptionId: r.subscription_id,
    kind: r.kind as Charge['kind'],
    amount: num(r.amount),
    currency: r.currency,
    quantity: r.quantity,
    priceId: r.price_id,
    description: r.description,
    periodStart: r.period_start,
    periodEnd: r.period_end,
    invoiceId: null,
    createdAt: r.created_at,
  }));
}

export async function claimCharges(trx: ITrx, tenantId: string, invoiceId: string, ids: string[]): Promise<void> {
  if (ids.length === 0) return;
  await trx.updateTable('billing_charges').set({ invoice_id: invoiceId }).where('tenant_id', '=', tenantId).where('id', 'in', ids).where('invoice_id', 'is', null).execute();
}

export async function findCharge(trx: ITrx, tenantId: string, id: string): Promise<{ amount: number; invoiceId: string | null; quantity: number; priceId: string } | undefined> {
  const r = await trx.selectFrom('billing_charges').select(['amount', 'invoice_id', 'quantity', 'price_id']).where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
  return r && { amount: num(r.amount), invoiceId: r.invoice_id ?? null, quantity: r.quantity, priceId: r.price_id };
}

// ---------------------------------------------------------------- usage: aggregated from the ledger

export async function findUsageCursor(trx: ITrx, tenantId: string, subscriptionId: string, metric: string): Promise<{ billedTo: Date; cutoff: Date } | undefined> {
  const r = await trx.selectFrom('billing_usage_cursors').select(['billed_to', 'cutoff']).where('tenant_id', '=', tenantId).where('subscription_id', '=', subscriptionId).where('metric', '=', metric).executeTakeFirst();
  return r && { billedTo: r.billed_to, cutoff: r.cutoff };
}

export async function setUsageCursor(trx: ITrx, tenantId: string, subscriptionId: string, metric: string, billedTo: Date, cutoff: Date): Promise<void> {
  await trx
    .insertInto('billing_usage_cursors')
    .values({ tenant_id: tenantId, subscription_id: subscriptionId, metric, billed_to: billedTo, cutoff })
    .onConflict((oc) => oc.columns(['tenant_id', 'subscription_id', 'metric']).doUpdateSet({ billed_to: billedTo, cutoff }))
    .execute();
}

export interface UsageWindow {
  metric: string;
  aggregation: UsageComputation['aggregation'];
  property: string | null;
  from: Date;
  to: Date;
  cutoff: Date;
  previousCutoff: Date | null;
  lowerBound: Date;
}

/**
 * The window's aggregate straight from the ledger, and a SHA-256 over every event it covers (key, time,
 * value, and the counted property), so a recomputation proves it saw the same events.
 */
export async function aggregateUsage(trx: ITrx, tenantId: string, w: UsageWindow): Promise<{ value: string; events: number; hash: string }> {
  if (w.aggregation === 'time_weighted_sum') return timeWeightedWindow(trx, tenantId, w);
  const prop = w.property ?? '';
  const agg =
    w.aggregation === 'count'
      ? sql`count(*)::numeric`
      : w.aggregation === 'sum'
        ? sql`coalesce(sum(value), 0)`
        : w.aggregation === 'max'
          ? sql`coalesce(max(value), 0)`
          : w.aggregation === 'unique_count'
            ? sql`count(distinct properties ->> ${prop})::numeric`
            : sql`coalesce((array_agg(value order by occurred_at desc, key desc))[1], 0)`;
  // Late events: occurred before the window, received after the previous invoice's cutoff.
  const late = w.previousCutoff === null ? sql`false` : sql`(occurred_at < ${w.from} and received_at > ${w.previousCutoff})`;
  const r = await sql<{ value: string; events: string; hash: string }>`
    select ${agg}::text as value, count(*)::text as events,
      encode(sha256(convert_to(coalesce(string_agg(
        key || '|' || (extract(epoch from occurred_at) * 1000)::bigint || '|' || value::text || '|' || coalesce(properties ->> ${prop}, ''),
        E'\n' order by key), ''), 'UTF8')), 'hex') as hash
    from billing_usage_events
    where tenant_id = ${tenantId} and metric = ${w.metric}
      and occurred_at >= ${w.lowerBound} and occurred_at < ${w.to} and received_at <= ${w.cutoff}
      and (occurred_at >= ${w.from} or ${late})`.execute(trx);
  const row = r.rows[0]!;
  return { value: normalizeNumeric(row.value), events: Number(row.events), hash: row.hash };
}

/**
 * A time-weighted window (seat-hours, GB-hours): the level in force at `from` (the last event before it)
 * and every event inside the window, as received by the cutoff, integrated in value × hours. Late events for
 * an already invoiced window are not re-billed (the level they would have changed was paid for). The hash
 * covers the carried-in level event too, so a recomputation proves it integrated the same steps.
 */
async function timeWeightedWindow(trx: ITrx, tenantId: string, w: UsageWindow): Promise<{ value: string; events: number; hash: string }> {
  const r = await sql<{ value: string; events: string; hash: string }>`
    with ev as (
      select occurred_at as t, key, value from billing_usage_events
      where tenant_id = ${tenantId} and metric = ${w.metric} and received_at <= ${w.cutoff}
        and occurred_at < ${w.to}
        and occurred_at >= coalesce((select max(occurred_at) from billing_usage_events
                                     where tenant_id = ${tenantId} and metric = ${w.metric} and received_at <= ${w.cutoff}
                                       and occurred_at <= ${w.from}), ${w.from})
    ), seg as (
      select key, t, value, greatest(t, ${w.from}::timestamptz) as s,
        least(coalesce(lead(t) over (order by t, key), ${w.to}::timestamptz), ${w.to}::timestamptz) as e
      from ev
    )
    select coalesce(sum(value * extract(epoch from (e - s))) filter (where e > s), 0) / 3600 as value,
      count(*)::text as events,
      encode(sha256(convert_to(coalesce(string_agg(
        key || '|' || (extract(epoch from t) * 1000)::bigint || '|' || value::text, E'\n' order by key), ''), 'UTF8')), 'hex') as hash
    from seg`.execute(trx);
  const row = r.rows[0]!;
  return { value: normalizeNumeric(String(row.value)), events: Number(row.events), hash: row.hash };
}

/** numeric → canonical text (no trailing zeros), so "3.500" and "3.5" hash and compare alike. */
export function normalizeNumeric(v: string): string {
  if (!v.includes('.')) return v;
  const t = v.replace(/0+$/, '').replace(/\.$/, '');
  return t === '-0' ? '0' : t;
}

// ---------------------------------------------------------------- coupons, promotion codes, discounts

export interface Coupon {
  id: string;
  key: string;
  name: string;
  percentOffPpm: number | null;
  amountOff: number | null;
  currency: string | null;
  duration: 'once' | 'repeating' | 'forever';
  durationMonths: number | null;
  createdAt: Date;
}

const toCoupon = (r: Selectable<DB['billing_coupons']>): Coupon => ({
  id: r.id,
  key: r.key,
  name: r.name,
  percentOffPpm: r.percent_off_ppm ?? null,
  amountOff: r.amount_off === null ? null : num(r.amount_off),
  currency: r.currency ?? null,
  duration: r.duration as Coupon['duration'],
  durationMonths: r.duration_months ?? null,
  createdAt: r.created_at,
});

export async function insertCoupon(trx: ITrx | IQ, c: Omit<Coupon, 'createdAt'>): Promise<Coupon | undefined> {
  const r = await trx
    .insertInto('billing_coupons')
    .values({ id: c.id, key: c.key, name: c.name, percent_off_ppm: c.percentOffPpm, amount_off: c.amountOff, currency: c.currency, duration: c.duration, duration_months: c.durationMonths })
    .onConflict((oc) => oc.column('key').doNothing())
    .returningAll()
    .executeTakeFirst();
  return r && toCoupon(r);
}

export async function listCoupons(q: IQ): Promise<Coupon[]> {
  return (await q.selectFrom('billing_coupons').selectAll().orderBy('key').limit(500).execute()).map(toCoupon);
}

export async function findCoupon(q: IQ | ITrx, id: string): Promise<Coupon | undefined> {
  const r = await q.selectFrom('billing_coupons').selectAll().where('id', '=', id).executeTakeFirst();
  return r && toCoupon(r);
}

export interface PromotionCode {
  id: string;
  code: string;
  couponId: string;
  active: boolean;
  maxRedemptions: number | null;
  timesRedeemed: number;
  expiresAt: Date | null;
  createdAt: Date;
}

const toPromo = (r: Selectable<DB['billing_promotion_codes']>): PromotionCode => ({
  id: r.id,
  code: r.code,
  couponId: r.coupon_id,
  active: r.active,
  maxRedemptions: r.max_redemptions ?? null,
  timesRedeemed: r.times_redeemed,
  expiresAt: r.expires_at ?? null,
  createdAt: r.created_at,
});

export async function insertPromotionCode(q: IQ, p: Pick<PromotionCode, 'id' | 'code' | 'couponId' | 'maxRedemptions' | 'expiresAt'>): Promise<PromotionCode | undefined> {
  const r = await q
    .insertInto('billing_promotion_codes')
    .values({ id: p.id, code: p.code, coupon_id: p.couponId, max_redemptions: p.maxRedemptions, expires_at: p.expiresAt })
    .onConflict((oc) => oc.column('code').doNothing())
    .returningAll()
    .executeTakeFirst();
  return r && toPromo(r);
}

export async function listPromotionCodes(q: IQ): Promise<PromotionCode[]> {
  return (await q.selectFrom('billing_promotion_codes').selectAll().orderBy('code').limit(500).execute()).map(toPromo);
}

/** Counts one redemption if the code is active, unexpired and not used up (one statement: no race). */
export async function redeemPromotionCode(trx: ITrx, code: string, now: Date): Promise<PromotionCode | undefined> {
  const r = await trx
    .updateTable('billing_promotion_codes')
    .set({ times_redeemed: sql<number>`times_redeemed + 1` })
    .where('code', '=', code)
    .where('active', '=', true)
    .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)]))
    .where((eb) => eb.or([eb('max_redemptions', 'is', null), eb('times_redeemed', '<', eb.ref('max_redemptions'))]))
    .returningAll()
    .executeTakeFirst();
  return r && toPromo(r);
}

export interface CustomerDiscount {
  id: string;
  couponId: string;
  promotionCode: string | null;
  coupon: Coupon;
  startedAt: Date;
  endsAt: Date | null;
  timesApplied: number;
  active: boolean;
}

export const toDiscount = (r: Selectable<DB['billing_customer_discounts']>): CustomerDiscount => {
  const coupon = json<Coupon>(r.coupon);
  return {
    id: r.id,
    couponId: r.coupon_id,
    promotionCode: r.promotion_code ?? null,
    coupon: { ...coupon, createdAt: new Date(coupon.createdAt) },
    startedAt: r.started_at,
    endsAt: r.ends_at ?? null,
    timesApplied: r.times_applied,
    active: r.active,
  };
};

export async function findActiveDiscount(trx: ITrx, tenantId: string): Promise<CustomerDiscount | undefined> {
  const r = await trx.selectFrom('billing_customer_discounts').selectAll().where('tenant_id', '=', tenantId).where('active', '=', true).executeTakeFirst();
  return r && toDiscount(r);
}

export async function replaceDiscount(trx: ITrx, tenantId: string, d: Omit<CustomerDiscount, 'timesApplied' | 'active'>): Promise<CustomerDiscount> {
  await trx.updateTable('billing_customer_discounts').set({ active: false }).where('tenant_id', '=', tenantId).where('active', '=', true).execute();
  const r = await trx
    .insertInto('billing_customer_discounts')
    .values({ tenant_id: tenantId, id: d.id, coupon_id: d.couponId, promotion_code: d.promotionCode, coupon: JSON.stringify(d.coupon), started_at: d.startedAt, ends_at: d.endsAt })
    .returningAll()
    .executeTakeFirstOrThrow();
  return toDiscount(r);
}

export async function markDiscountApplied(trx: ITrx, tenantId: string, id: string, stillActive: boolean): Promise<void> {
  await trx
    .updateTable('billing_customer_discounts')
    .set({ times_applied: sql<number>`times_applied + 1`, active: stillActive })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .execute();
}

// ---------------------------------------------------------------- tax rates

export interface TaxRate {
  id: string;
  country: string;
  region: string;
  name: string;
  percentagePpm: number;
  inclusive: boolean;
  active: boolean;
  createdAt: Date;
}

const toTaxRate = (r: Selectable<DB['billing_tax_rates']>): TaxRate => ({
  id: r.id,
  country: r.country,
  region: r.region,
  name: r.name,
  percentagePpm: r.percentage_ppm,
  inclusive: r.inclusive,
  active: r.active,
  createdAt: r.created_at,
});

/** Adds a rate; an active rate for the same place is retired (rates are never edited: invoices keep theirs). */
export async function insertTaxRate(trx: ITrx, t: Omit<TaxRate, 'active' | 'createdAt'>): Promise<TaxRate> {
  await trx.updateTable('billing_tax_rates').set({ active: false }).where('country', '=', t.country).where('region', '=', t.region).where('active', '=', true).execute();
  const r = await trx
    .insertInto('billing_tax_rates')
    .values({ id: t.id, country: t.country, region: t.region, name: t.name, percentage_ppm: t.percentagePpm, inclusive: t.inclusive })
    .returningAll()
    .executeTakeFirstOrThrow();
  return toTaxRate(r);
}

export async function listTaxRates(q: IQ): Promise<TaxRate[]> {
  return (await q.selectFrom('billing_tax_rates').selectAll().where('active', '=', true).orderBy('country').orderBy('region').limit(1000).execute()).map(toTaxRate);
}

/** The active rate of the region if there is one, else the country's. */
export async function findTaxRate(q: IQ | ITrx, country: string, region: string): Promise<TaxRate | undefined> {
  const rows = await q.selectFrom('billing_tax_rates').selectAll().where('active', '=', true).where('country', '=', country).where('region', 'in', region ? [region, ''] : ['']).execute();
  const best = rows.find((r) => r.region === region) ?? rows.find((r) => r.region === '');
  return best && toTaxRate(best);
}

// ---------------------------------------------------------------- credit notes and the credit balance

export interface CreditNote {
  id: string;
  invoiceId: string;
  amount: number;
  outstandingAmount: number;
  balanceAmount: number;
  refundAmount: number;
  gatewayRefundId: string | null;
  reason: 'duplicate' | 'fraudulent' | 'order_change' | 'product_unsatisfactory' | 'other';
  memo: string;
  createdAt: Date;
}

const toCreditNote = (r: Selectable<DB['billing_credit_notes']>): CreditNote => ({
  id: r.id,
  invoiceId: r.invoice_id,
  amount: num(r.amount),
  outstandingAmount: num(r.outstanding_amount),
  balanceAmount: num(r.balance_amount),
  refundAmount: num(r.refund_amount),
  gatewayRefundId: r.gateway_refund_id ?? null,
  reason: r.reason as CreditNote['reason'],
  memo: r.memo,
  createdAt: r.created_at,
});

export async function insertCreditNote(trx: ITrx, tenantId: string, n: Omit<CreditNote, 'createdAt'>): Promise<CreditNote> {
  const r = await trx
    .insertInto('billing_credit_notes')
    .values({
      tenant_id: tenantId,
      id: n.id,
      invoice_id: n.invoiceId,
      amount: n.amount,
      outstanding_amount: n.outstandingAmount,
      balance_amount: n.balanceAmount,
      refund_amount: n.refundAmount,
      gateway_refund_id: n.gatewayRefundId,
      reason: n.reason,
      memo: n.memo,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  return toCreditNote(r);
}

export async function listCreditNotes(trx: ITrx, tenantId: string, invoiceId: string): Promise<CreditNote[]> {
  return (await trx.selectFrom('billing_credit_notes').selectAll().where('tenant_id', '=', tenantId).where('invoice_id', '=', invoiceId).orderBy('id').execute()).map(toCreditNote);
}

export async function getBalance(trx: ITrx, tenantId: string, opts: { forUpdate?: boolean } = {}): Promise<{ balance: number; currency: string } | undefined> {
  let q = trx.selectFrom('billing_customer_balances').select(['balance', 'currency']).where('tenant_id', '=', tenantId);
  if (opts.forUpdate) q = q.forUpdate();
  const r = await q.executeTakeFirst();
  return r && { balance: num(r.balance), currency: r.currency };
}

/** Moves the balance by `amount` (positive: credit added) and records why, in the caller's transaction. */
export async function moveBalance(
  trx: ITrx,
  tenantId: string,
  m: { id: string; amount: number; currency: string; kind: 'credit_note' | 'invoice_overpayment' | 'applied_to_invoice' | 'invoice_voided'; invoiceId?: string; creditNoteId?: string },
): Promise<number> {
  // A CHECK is evaluated on the proposed row before ON CONFLICT: a debit updates the (existing) row.
  const r = m.amount < 0
    ? await trx
        .updateTable('billing_customer_balances')
        .set({ balance: sql<number>`balance + ${m.amount}`, updated_at: sql<Date>`now()` })
        .where('tenant_id', '=', tenantId)
        .returning('balance')
        .executeTakeFirstOrThrow()
    : await trx
    .insertInto('billing_customer_balances')
    .values({ tenant_id: tenantId, currency: m.currency, balance: m.amount })
    .onConflict((oc) => oc.column('tenant_id').doUpdateSet({ balance: sql<number>`billing_customer_balances.balance + ${m.amount}`, updated_at: sql<Date>`now()` }))
    .returning('balance')
    .executeTakeFirstOrThrow();
  await trx
    .insertInto('billing_balance_transactions')
    .values({ tenant_id: tenantId, id: m.id, amount: m.amount, currency: m.currency, kind: m.kind, invoice_id: m.invoiceId ?? null, credit_note_id: m.creditNoteId ?? null })
    .execute();
  return num(r.balance);
}

// ---------------------------------------------------------------- orgs with invoices (global index)

export async function noteInvoiceOrg(trx: ITrx, tenantId: string, at: Date): Promise<void> {
  await trx.insertInto('billing_invoice_orgs').values({ tenant_id: tenantId, last_finalized_at: at }).onConflict((oc) => oc.column('tenant_id').doUpdateSet({ last_finalized_at: at })).execute();
}

export async function invoiceOrgs(app: IQ, after: string | undefined, limit: number): Promise<string[]> {
  let q = app.selectFrom('billing_invoice_orgs').select('tenant_id');
  if (after) q = q.where('tenant_id', '>', after);
  return (await q.orderBy('tenant_id').limit(limit).execute()).map((r) => r.tenant_id);
}
