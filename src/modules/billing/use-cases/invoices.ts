import type { TxHandle } from '../../../platform/db/database.ts';
import { PLATFORM_AUDIT_TENANT } from '../../audit/index.ts';
import type { ActorContext, TenantActorContext } from '../../../platform/http/actor.ts';
import { systemActor } from '../../../platform/http/actor.ts';
import { newId } from '../../../platform/ids.ts';
import { addMonthsAnchored } from '../billing.calendar.ts';
import {
  couponNotFound,
  creditTooLarge,
  invalidCoupon,
  invalidInvoiceState,
  invoiceNotFound,
  nothingToInvoice,
  promotionCodeInvalid,
  unknownCurrency,
} from '../billing.errors.ts';
import { BILLING_EVENTS, type CreditNoteEventPayload, type InvoiceEventPayload } from '../billing.events.ts';
import { computeTotals } from '../billing.invoice-math.ts';
import { currencyExponent, formatMoney } from '../billing.money.ts';
import { amountFor } from '../billing.pricing.ts';
import { findAddons } from '../addons.repo.ts';
import * as catalog from '../billing.repo.ts';
import type { Meter, Price } from '../billing.repo.ts';
import { createRatesTableTaxProvider, locationOf, type TaxProvider } from '../billing.tax.ts';
import * as repo from '../invoices.repo.ts';
import type { Coupon, CreditNote, CustomerDiscount, DiscountSnapshot, Invoice, InvoiceLine, InvoiceReason, InvoiceStatus, ITrx, PromotionCode, TaxRate, TaxSnapshot } from '../invoices.repo.ts';
import { asBilling, invoicingScope } from '../invoices.repo.ts';
import { scheduleDunning } from '../payments.repo.ts';
import { enqueueInvoice } from '../invoice-run.repo.ts';
import * as subs from '../subscriptions.repo.ts';
import type { Charge, Subscription } from '../subscriptions.repo.ts';
import type { BillingContext } from './context.ts';

export interface InvoiceView extends Invoice {
  lines: InvoiceLine[];
  creditNotes: CreditNote[];
  /** Still to pay: amount due minus what was paid. */
  amountRemaining: number;
}

export interface Mismatch {
  orgId: string;
  invoiceId: string;
  number: string | null;
  lineId: string | null;
  field: string;
  stored: string | number | null;
  recomputed: string | number | null;
}

export interface NewCouponInput {
  key: string;
  name: string;
  percentOff?: number;
  amountOff?: number;
  currency?: string;
  duration: 'once' | 'repeating' | 'forever';
  durationMonths?: number;
}

export interface CreditNoteInput {
  amount: number;
  reason: CreditNote['reason'];
  memo?: string;
  /** A paid invoice: refund through the gateway instead of crediting the customer's balance. */
  refund?: boolean;
}

export interface InvoiceUseCases {
  listInvoices(orgId: string, opts: { limit: number; before?: string; status?: InvoiceStatus }): Promise<Invoice[]>;
  getInvoice(orgId: string, invoiceId: string): Promise<InvoiceView>;
  /** On demand: invoices what is owed now (open charges, usage up to the current period), finalized unless `finalize: false`. */
  createInvoice(ctx: TenantActorContext, input: { finalize?: boolean }): Promise<InvoiceView>;
  finalizeInvoice(ctx: TenantActorContext, invoiceId: string): Promise<InvoiceView>;
  /** Deletes a draft (its charges are owed again). */
  deleteDraft(ctx: TenantActorContext, invoiceId: string): Promise<void>;
  voidInvoice(ctx: TenantActorContext, invoiceId: string): Promise<InvoiceView>;
  markUncollectible(ctx: TenantActorContext, invoiceId: string): Promise<InvoiceView>;
  createCreditNote(ctx: TenantActorContext, invoiceId: string, input: CreditNoteInput): Promise<CreditNote>;
  creditBalance(orgId: string): Promise<{ balance: number; currency: string }>;
  redeemPromotionCode(ctx: TenantActorContext, code: string): Promise<CustomerDiscount>;
  getDiscount(orgId: string): Promise<CustomerDiscount | null>;
  /** Recomputes the org's finalized invoices (or one) from the ledger and the price versions: every difference. */
  verifyInvoices(orgId: string, invoiceId?: string): Promise<{ invoices: number; mismatches: Mismatch[] }>;
  /** Every org with invoices, page by page (for `plinth billing verify`). */
  invoiceOrgIds(after: string | undefined, limit: number): Promise<string[]>;
  // catalog of discounts and taxes (platform admins)
  createCoupon(ctx: ActorContext, input: NewCouponInput): Promise<Coupon>;
  listCoupons(): Promise<Coupon[]>;
  createPromotionCode(ctx: ActorContext, input: { code: string; couponId: string; maxRedemptions?: number; expiresAt?: string }): Promise<PromotionCode>;
  listPromotionCodes(): Promise<PromotionCode[]>;
  createTaxRate(ctx: ActorContext, input: { country: string; region?: string; name: string; percentage: number; inclusive?: boolean }): Promise<TaxRate>;
  listTaxRates(): Promise<TaxRate[]>;
  /** Outbox consumer: a subscription change left charges or closed a usage window → an invoice, in the handler's transaction. */
  invoiceForSubscriptionEvent(trx: TxHandle, orgId: string, change: string, event?: { subscriptionId: string; currentPeriodEnd: string }): Promise<Invoice | null>;
}

/** Usage received less than this before an invoice is counted on the next one (ingestion transactions still in flight). */
export const USAGE_SETTLE_MS = 30_000;

const REASON_BY_CHANGE: Record<string, InvoiceReason> = {
  created: 'subscription_create',
  activated: 'subscription_create',
  renewed: 'subscription_cycle',
  plan_changed: 'subscription_update',
  quantity_changed: 'subscription_update',
  canceled: 'subscription_update',
};

export function invoiceNumber(orgId: string, seq: number): string {
  return `${orgId.replace(/-/g, '').slice(-8).toUpperCase()}-${String(seq).padStart(5, '0')}`;
}

export function invoicePayload(inv: Invoice): InvoiceEventPayload {
  return {
    invoiceId: inv.id,
    number: inv.number,
    status: inv.status,
    reason: inv.reason,
    subscriptionId: inv.subscriptionId,
    currency: inv.currency,
    currencyExponent: currencyExponent(inv.currency) ?? 2,
    total: inv.total,
    amountDue: inv.amountDue,
    amountPaid: inv.amountPaid,
    periodStart: inv.periodStart.toISOString(),
    periodEnd: inv.periodEnd.toISOString(),
  };
}

const pricing = (p: Price) => ({ model: p.model, flatAmount: p.flatAmount, unitAmount: p.unitAmount, tiers: p.tiers, packageSize: p.packageSize });

/*
 * The pure steps of making an invoice, shared by the per-event path (`invoicePending` / `finalize`) and the
 * batched invoice run (use-cases/invoice-run.ts), so both compute the same lines and totals from the same state.
 */

/** The line of one open charge, priced as Billing I charged it. */
/** A catalog price by id, read once per cache (one invoice, or one batch of the invoice run). */
async function cachedPrice(trx: ITrx, cache: Map<string, Price>, id: string): Promise<Price | undefined> {
  let p = cache.get(id);
  if (!p) {
    p = await catalog.findPrice(asBilling(trx), id);
    if (p) cache.set(id, p);
  }
  return p;
}

export async function priceOf(trx: ITrx, cache: Map<string, Price>, id: string): Promise<Price> {
  const p = await cachedPrice(trx, cache, id);
  if (!p) throw new Error(`price ${id} is missing from the catalog`);
  return p;
}

/** A charge's catalog price; null when the charge is an add-on's (priced by its definition). */
export async function chargePriceOf(trx: ITrx, cache: Map<string, Price>, id: string): Promise<Price | null> {
  const p = await cachedPrice(trx, cache, id);
  if (p) return p;
  if ((await findAddons(asBilling(trx), [id])).length > 0) return null;
  throw new Error(`price ${id} is missing from the catalog`);
}

/**
 * The line of a ledger charge. `price` is null for an add-on's charge: add-ons are priced by their own
 * definition (billing_addons), not by a catalog price version, so the line names none.
 */
export function chargeLine(invoiceId: string, ch: Charge, price: Price | null): InvoiceLine {
  if (!price) {
    return {
      id: newId(), invoiceId, position: 0, kind: ch.kind, description: ch.description, chargeId: ch.id, subscriptionId: ch.subscriptionId,
      priceId: null, priceVersion: null, quantity: ch.quantity, unitAmount: ch.quantity > 0 && ch.amount % ch.quantity === 0 ? ch.amount / ch.quantity : null,
      amount: ch.amount, discountAmount: 0, taxAmount: 0, periodStart: ch.periodStart, periodEnd: ch.periodEnd,
      // Priced by the add-on's definition (its id is the charge's priceId), not by a catalog price version.
      computation: { source: 'charge', model: 'addon', flatAmount: 0, unitAmount: ch.quantity > 0 ? Math.floor(ch.amount / ch.quantity) : 0, tiers: [], packageSize: 1, quantity: ch.quantity, amount: ch.amount },
    };
  }
  return {
    id: newId(),
    invoiceId,
    position: 0,
    kind: ch.kind,
    description: ch.description,
    chargeId: ch.id,
    subscriptionId: ch.subscriptionId,
    priceId: price.id,
    priceVersion: price.version,
    quantity: ch.quantity,
    unitAmount: price.model === 'per_unit' ? price.unitAmount : null,
    amount: ch.amount,
    discountAmount: 0,
    taxAmount: 0,
    periodStart: ch.periodStart,
    periodEnd: ch.periodEnd,
    computation: { source: 'charge', ...pricing(price), quantity: ch.quantity, amount: ch.amount },
  };
}

/** The usage window a metered subscription's next invoice covers: from its cursor (or anchor) to the current period; null when empty. */
export function usageWindowFor(
  sub: Subscription,
  price: Price,
  meter: Meter | undefined,
  cursor: { billedTo: Date; cutoff: Date } | undefined,
  cutoff: Date,
  now: Date,
  usageLateWindowMs: number,
): repo.UsageWindow | null {
  if (price.usageType !== 'metered' || !price.metric) return null;
  const from = cursor?.billedTo ?? sub.anchorAt;
  const to = sub.status === 'canceled' ? (sub.canceledAt ?? now) : sub.currentPeriodStart;
  if (to.getTime() <= from.getTime()) return null;
  return {
    metric: price.metric,
    aggregation: meter?.aggregation ?? 'sum',
    property: meter?.property ?? null,
    from,
    to,
    cutoff,
    previousCutoff: cursor?.cutoff ?? null,
    // Late events are accepted up to the late window behind the org's clock, which never went back before `from`.
    lowerBound: cursor ? new Date(from.getTime() - usageLateWindowMs - 3_600_000) : from,
  };
}

/** The usage line of a window's aggregate (null when nothing was used and nothing is owed). */
export function usageLineFrom(invoiceId: string, sub: Subscription, price: Price, meter: Meter | undefined, window: repo.UsageWindow, agg: { value: string; events: number; hash: string }): InvoiceLine | null {
  const { from, to, cutoff } = window;
  const quantity = Math.max(0, Math.ceil(Number(agg.value)));
  const amount = amountFor(price, quantity);
  if (agg.events === 0 && amount === 0) return null;
  return {
    id: newId(),
    invoiceId,
    position: 0,
    kind: 'usage',
    description: `${meter?.name ?? price.metric}: ${agg.value} (${from.toISOString().slice(0, 10)} – ${to.toISOString().slice(0, 10)})`,
    chargeId: null,
    subscriptionId: sub.id,
    priceId: price.id,
    priceVersion: price.version,
    quantity,
    unitAmount: price.model === 'per_unit' || price.model === 'package' ? price.unitAmount : null,
    amount,
    discountAmount: 0,
    taxAmount: 0,
    periodStart: from,
    periodEnd: to,
    computation: {
      source: 'usage',
      ...pricing(price),
      quantity,
      amount,
      usage: {
        metric: window.metric,
        aggregation: window.aggregation,
        property: window.property,
        from: from.toISOString(),
        to: to.toISOString(),
        cutoff: cutoff.toISOString(),
        previousCutoff: window.previousCutoff?.toISOString() ?? null,
        lowerBound: window.lowerBound.toISOString(),
        value: agg.value,
        events: agg.events,
        hash: agg.hash,
      },
    },
  };
}

/** Finalization's arithmetic: the org's discount if still running (and worth something), tax, totals. */
export function finalTotals(
  lines: InvoiceLine[],
  active: CustomerDiscount | undefined,
  now: Date,
  taxRate: TaxSnapshot | null,
  currency: string,
): { live: CustomerDiscount | undefined; discount: DiscountSnapshot | null; totals: ReturnType<typeof computeTotals> } {
  const live = active && (active.endsAt === null || now < active.endsAt) ? active : undefined;
  let discount: DiscountSnapshot | null = live
    ? {
        customerDiscountId: live.id,
        couponId: live.couponId,
        key: live.coupon.key,
        name: live.coupon.name,
        percentOffPpm: live.coupon.percentOffPpm,
        amountOff: live.coupon.amountOff,
        currency: live.coupon.currency,
        duration: live.coupon.duration,
        promotionCode: live.promotionCode,
      }
    : null;
  let totals = computeTotals(lines, discount, taxRate, currency);
  if (discount && totals.discountTotal === 0) {
    discount = null;
    totals = computeTotals(lines, null, taxRate, currency);
  }
  return { live, discount, totals };
}

/** What payments and dunning share with invoicing (same transaction). */
export interface InvoicingCore {
  scope: ReturnType<typeof invoicingScope>;
  /** The tax seam finalization asks (the invoice run asks the same one). */
  tax: TaxProvider;
  /** Invoices everything owed now; null when nothing is. */
  invoicePending(trx: ITrx, ctx: TenantActorContext, reason: InvoiceReason, opts: { finalize: boolean }): Promise<Invoice | null>;
  finalize(trx: ITrx, ctx: TenantActorContext, invoice: Invoice): Promise<Invoice>;
  view(trx: ITrx, orgId: string, invoice: Invoice): Promise<InvoiceView>;
  record(trx: ITrx, ctx: TenantActorContext, action: string, id: string, changes?: Record<string, unknown>): Promise<void>;
  publish(trx: ITrx, ctx: TenantActorContext, name: string, payload: object): Promise<void>;
}

export function createInvoicingCore(c: BillingContext, tax: TaxProvider = createRatesTableTaxProvider()): InvoicingCore {
  const scope = invoicingScope(c.deps.db);
  const record: InvoicingCore['record'] = (trx, ctx, action, id, changes = {}) => c.record(asBilling(trx), ctx, action, { type: 'billing_invoice', id }, changes);
  const publish: InvoicingCore['publish'] = (trx, ctx, name, payload) => c.publish(asBilling(trx), ctx, name, payload);

  /** The usage line of a metered subscription for the window its last invoice left open, up to the current period. */
  async function usageLine(trx: ITrx, orgId: string, invoiceId: string, sub: Subscription, price: Price, cutoff: Date, now: Date): Promise<InvoiceLine | null> {
    if (price.usageType !== 'metered' || !price.metric) return null;
    const cursor = await repo.findUsageCursor(trx, orgId, sub.id, price.metric);
    const meter = (await catalog.listMeters(asBilling(trx))).find((m) => m.key === price.metric);
    const window = usageWindowFor(sub, price, meter, cursor, cutoff, now, c.deps.config.usageLateWindowMs);
    if (!window) return null;
    const agg = await repo.aggregateUsage(trx, orgId, window);
    await repo.setUsageCursor(trx, orgId, sub.id, window.metric, window.to, cutoff);
    return usageLineFrom(invoiceId, sub, price, meter, window, agg);
  }

  async function invoicePending(trx: ITrx, ctx: TenantActorContext, reason: InvoiceReason, opts: { finalize: boolean }): Promise<Invoice | null> {
    const orgId = ctx.tenantId;
    const customer = await subs.lockCustomer(asBilling(trx), orgId);
    const { now, onTestClock } = await c.clockNow(asBilling(trx), orgId);
    const cutoff = new Date(Date.now() - (onTestClock ? 0 : USAGE_SETTLE_MS));
    const sub = await subs.findLatestSubscription(asBilling(trx), orgId);
    const prices = new Map<string, Price>();
    const invoiceId = newId();
    const all = await repo.openCharges(trx, orgId);
    const currency = sub?.currency ?? all[0]?.currency ?? customer.currency;
    const charges = all.filter((ch) => ch.currency === currency);
    const lines: InvoiceLine[] = [];
    for (const ch of charges) lines.push(chargeLine(invoiceId, ch, await chargePriceOf(trx, prices, ch.priceId)));
    if (sub) {
      const usage = await usageLine(trx, orgId, invoiceId, sub, await priceOf(trx, prices, sub.priceId), cutoff, now);
      if (usage) lines.push(usage);
    }
    if (lines.length === 0) return null;
    lines.forEach((l, i) => (l.position = i + 1));
    const subtotal = lines.reduce((a, l) => a + l.amount, 0);
    const invoice = await repo.insertInvoice(trx, orgId, {
      id: invoiceId,
      reason,
      subscriptionId: sub?.id ?? null,
      currency,
      periodStart: new Date(Math.min(...lines.map((l) => l.periodStart.getTime()))),
      periodEnd: new Date(Math.max(...lines.map((l) => l.periodEnd.getTime()))),
      usageCutoff: cutoff,
      subtotal,
      total: subtotal,
      amountDue: Math.max(0, subtotal),
    });
    await repo.insertLines(trx, orgId, lines);
    await repo.claimCharges(trx, orgId, invoiceId, charges.map((ch) => ch.id));
    await record(trx, ctx, 'billing.invoice.create', invoiceId, { reason, lines: lines.length, subtotal });
    return opts.finalize ? finalize(trx, ctx, invoice) : invoice;
  }

  /** Draft → finalized: discount, tax and credit balance applied, the next gap-free number taken. */
  async function finalize(trx: ITrx, ctx: TenantActorContext, invoice: Invoice): Promise<Invoice> {
    const orgId = ctx.tenantId;
    if (invoice.status !== 'draft') throw invalidInvoiceState(invoice.status, 'finalized');
    const customer = (await subs.findCustomer(asBilling(trx), orgId)) ?? (await subs.lockCustomer(asBilling(trx), orgId));
    const { now } = await c.clockNow(asBilling(trx), orgId);
    const lines = await repo.listLines(trx, orgId, invoice.id);
    const active = await repo.findActiveDiscount(trx, orgId);
    const taxRate = await tax.rateFor(trx, locationOf(customer.address));
    const { live, discount, totals } = finalTotals(lines, active, now, taxRate, invoice.currency);
    if (active && !live) await repo.markDiscountApplied(trx, orgId, active.id, false);
    if (live && discount) await repo.markDiscountApplied(trx, orgId, live.id, live.coupon.duration !== 'once');
    await repo.setLineAdjustments(trx, orgId, lines.map((l, i) => ({ id: l.id, ...totals.lines[i]! })));
    // The customer's credit balance pays first; a negative total (credits) adds to it.
    let creditApplied = 0;
    const balance = await repo.getBalance(trx, orgId, { forUpdate: true });
    if (totals.total > 0 && balance && balance.balance > 0 && balance.currency === invoice.currency) {
      creditApplied = Math.min(balance.balance, totals.total);
      await repo.moveBalance(trx, orgId, { id: newId(), amount: -creditApplied, currency: invoice.currency, kind: 'applied_to_invoice', invoiceId: invoice.id });
    } else if (totals.total < 0 && (!balance || balance.currency === invoice.currency || balance.balance === 0)) {
      await repo.moveBalance(trx, orgId, { id: newId(), amount: -totals.total, currency: invoice.currency, kind: 'invoice_overpayment', invoiceId: invoice.id });
    }
    const amountDue = Math.max(0, totals.total - creditApplied);
    const seq = await repo.nextInvoiceSeq(trx, orgId);
    const paid = amountDue === 0;
    const updated = await repo.updateInvoice(trx, orgId, invoice.id, {
      status: paid ? 'paid' : 'finalized',
      seq,
      number: invoiceNumber(orgId, seq),
      customer: { name: customer.name, email: customer.email, address: customer.address, taxId: customer.taxId },
      discount,
      tax: taxRate,
      subtotal: totals.subtotal,
      discountTotal: totals.discountTotal,
      taxTotal: totals.taxTotal,
      total: totals.total,
      creditApplied,
      amountDue,
      finalizedAt: now,
      paidAt: paid ? now : null,
    });
    await repo.noteInvoiceOrg(trx, orgId, new Date());
    await record(trx, ctx, 'billing.invoice.finalize', invoice.id, { number: updated.number, total: updated.total, amountDue });
    await publish(trx, ctx, BILLING_EVENTS.invoiceFinalized, invoicePayload(updated));
    if (paid) await publish(trx, ctx, BILLING_EVENTS.invoicePaid, invoicePayload(updated));
    return updated;
  }

  async function view(trx: ITrx, orgId: string, invoice: Invoice): Promise<InvoiceView> {
    const [lines, creditNotes] = await Promise.all([repo.listLines(trx, orgId, invoice.id), repo.listCreditNotes(trx, orgId, invoice.id)]);
    return { ...invoice, lines, creditNotes, amountRemaining: invoice.status === 'finalized' ? Math.max(0, invoice.amountDue - invoice.amountPaid) : 0 };
  }

  return { scope, tax, invoicePending, finalize, view, record, publish };
}

export function invoiceUseCases(c: BillingContext, core: InvoicingCore, refund: (ctx: TenantActorContext, trx: ITrx, invoice: Invoice, amount: number, creditNoteId: string) => Promise<string>): InvoiceUseCases {
  const { scope } = core;

  async function locked(trx: ITrx, orgId: string, id: string): Promise<Invoice> {
    await subs.lockCustomer(asBilling(trx), orgId);
    const inv = await repo.findInvoice(trx, orgId, id, { forUpdate: true });
    if (!inv) throw invoiceNotFound();
    return inv;
  }

  async function verifyOne(trx: ITrx, orgId: string, inv: Invoice): Promise<Mismatch[]> {
    const out: Mismatch[] = [];
    const miss = (lineId: string | null, field: string, stored: string | number | null, recomputed: string | number | null) => {
      if (stored !== recomputed) out.push({ orgId, invoiceId: inv.id, number: inv.number, lineId, field, stored, recomputed });
    };
    const lines = await repo.listLines(trx, orgId, inv.id);
    for (const l of lines) {
      const price = l.priceId ? await catalog.findPrice(asBilling(trx), l.priceId) : undefined;
      miss(l.id, 'priceVersion', l.priceVersion, price?.version ?? null);
      miss(l.id, 'computation.amount', l.computation.amount, l.amount);
      miss(l.id, 'computation.quantity', l.computation.quantity, l.quantity);
      const u = l.computation.usage;
      if (l.kind === 'usage' && u) {
        const agg = await repo.aggregateUsage(trx, orgId, {
          metric: u.metric,
          aggregation: u.aggregation,
          property: u.property,
          from: new Date(u.from),
          to: new Date(u.to),
          cutoff: new Date(u.cutoff),
          previousCutoff: u.previousCutoff ? new Date(u.previousCutoff) : null,
          lowerBound: new Date(u.lowerBound),
        });
        miss(l.id, 'usage.value', u.value, agg.value);
        miss(l.id, 'usage.events', u.events, agg.events);
        miss(l.id, 'usage.hash', u.hash, agg.hash);
        const quantity = Math.max(0, Math.ceil(Number(agg.value)));
        miss(l.id, 'quantity', l.quantity, quantity);
        if (price) miss(l.id, 'amount', l.amount, amountFor(price, quantity));
      } else {
        const charge = l.chargeId ? await repo.findCharge(trx, orgId, l.chargeId) : undefined;
        miss(l.id, 'amount', l.amount, charge?.amount ?? null);
        miss(l.id, 'charge.invoiceId', inv.id, charge?.invoiceId ?? null);
        if (l.kind === 'subscription' && price) miss(l.id, 'amount (price × quantity)', l.amount, amountFor(price, l.quantity));
      }
    }
    const totals = computeTotals(lines, inv.discount, inv.tax, inv.currency);
    lines.forEach((l, i) => {
      miss(l.id, 'discountAmount', l.discountAmount, totals.lines[i]!.discountAmount);
      miss(l.id, 'taxAmount', l.taxAmount, totals.lines[i]!.taxAmount);
    });
    miss(null, 'subtotal', inv.subtotal, totals.subtotal);
    miss(null, 'discountTotal', inv.discountTotal, totals.discountTotal);
    miss(null, 'taxTotal', inv.taxTotal, totals.taxTotal);
    miss(null, 'total', inv.total, totals.total);
    const outstandingCredit = (await repo.listCreditNotes(trx, orgId, inv.id)).reduce((a, n) => a + n.outstandingAmount, 0);
    miss(null, 'amountDue', inv.amountDue, Math.max(0, totals.total - inv.creditApplied) - outstandingCredit);
    return out;
  }

  const adminCtx = (ctx: ActorContext): TenantActorContext => ({ ...ctx, tenantId: PLATFORM_AUDIT_TENANT });
  const inPlatform = <T>(fn: (trx: ITrx) => Promise<T>) => scope.withTenant(PLATFORM_AUDIT_TENANT, fn);

  return {
    async listInvoices(orgId, opts) {
      return scope.withTenantRead(orgId, (trx) => repo.listInvoices(trx, orgId, opts));
    },
    async getInvoice(orgId, id) {
      return scope.withTenantRead(orgId, async (trx) => {
        const inv = await repo.findInvoice(trx, orgId, id);
        if (!inv) throw invoiceNotFound();
        return core.view(trx, orgId, inv);
      });
    },
    async createInvoice(ctx, input) {
      return scope.withTenant(ctx.tenantId, async (trx) => {
        const inv = await core.invoicePending(trx, ctx, 'manual', { finalize: input.finalize ?? true });
        if (!inv) throw nothingToInvoice();
        return core.view(trx, ctx.tenantId, inv);
      });
    },
    async finalizeInvoice(ctx, id) {
      return scope.withTenant(ctx.tenantId, async (trx) => core.view(trx, ctx.tenantId, await core.finalize(trx, ctx, await locked(trx, ctx.tenantId, id))));
    },
    async deleteDraft(ctx, id) {
      await scope.withTenant(ctx.tenantId, async (trx) => {
        const inv = await locked(trx, ctx.tenantId, id);
        if (inv.status !== 'draft') throw invalidInvoiceState(inv.status, 'deleted (void it instead)');
        await repo.deleteDraft(trx, ctx.tenantId, id);
        await core.record(trx, ctx, 'billing.invoice.delete_draft', id);
      });
    },
    async voidInvoice(ctx, id) {
      return scope.withTenant(ctx.tenantId, async (trx) => {
        const inv = await locked(trx, ctx.tenantId, id);
        if (inv.status !== 'finalized' || inv.amountPaid > 0) throw invalidInvoiceState(inv.status, inv.amountPaid > 0 ? 'voided (it is partly paid; issue a credit note)' : 'voided');
        const { now } = await c.clockNow(asBilling(trx), ctx.tenantId);
        // Credit balance it consumed goes back to the customer.
        if (inv.creditApplied > 0) await repo.moveBalance(trx, ctx.tenantId, { id: newId(), amount: inv.creditApplied, currency: inv.currency, kind: 'invoice_voided', invoiceId: id });
        const updated = await repo.updateInvoice(trx, ctx.tenantId, id, { status: 'void', voidedAt: now, nextPaymentAttemptAt: null });
        await scheduleDunning(trx, ctx.tenantId, id, null, false);
        await core.record(trx, ctx, 'billing.invoice.void', id, { number: inv.number });
        await core.publish(trx, ctx, BILLING_EVENTS.invoiceVoided, invoicePayload(updated));
        return core.view(trx, ctx.tenantId, updated);
      });
    },
    async markUncollectible(ctx, id) {
      return scope.withTenant(ctx.tenantId, async (trx) => {
        const inv = await locked(trx, ctx.tenantId, id);
        if (inv.status !== 'finalized') throw invalidInvoiceState(inv.status, 'marked uncollectible');
        const { now } = await c.clockNow(asBilling(trx), ctx.tenantId);
        const updated = await repo.updateInvoice(trx, ctx.tenantId, id, { status: 'uncollectible', uncollectibleAt: now, nextPaymentAttemptAt: null });
        await scheduleDunning(trx, ctx.tenantId, id, null, false);
        await core.record(trx, ctx, 'billing.invoice.mark_uncollectible', id, { number: inv.number });
        await core.publish(trx, ctx, BILLING_EVENTS.invoiceUncollectible, invoicePayload(updated));
        return core.view(trx, ctx.tenantId, updated);
      });
    },
    async createCreditNote(ctx, id, input) {
      return scope.withTenant(ctx.tenantId, async (trx) => {
        const inv = await locked(trx, ctx.tenantId, id);
        if (inv.status !== 'finalized' && inv.status !== 'paid') throw invalidInvoiceState(inv.status, 'credited');
        const creditable = Math.max(0, inv.total - inv.credited);
        if (input.amount > creditable) throw creditTooLarge(creditable);
        const { now } = await c.clockNow(asBilling(trx), ctx.tenantId);
        const noteId = newId();
        // An unpaid invoice: the note first reduces what is still owed; the rest is credit (or a refund).
        const owed = inv.status === 'finalized' ? Math.max(0, inv.amountDue - inv.amountPaid) : 0;
        const outstanding = Math.min(input.amount, owed);
        const rest = input.amount - outstanding;
        const refundAmount = input.refund && inv.amountPaid > 0 ? Math.min(rest, inv.amountPaid) : 0;
        const balanceAmount = rest - refundAmount;
        const gatewayRefundId = refundAmount > 0 ? await refund(ctx, trx, inv, refundAmount, noteId) : null;
        const note = await repo.insertCreditNote(trx, ctx.tenantId, { id: noteId, invoiceId: id, amount: input.amount, outstandingAmount: outstanding, balanceAmount, refundAmount, gatewayRefundId, reason: input.reason, memo: input.memo ?? '' });
        if (balanceAmount > 0) await repo.moveBalance(trx, ctx.tenantId, { id: newId(), amount: balanceAmount, currency: inv.currency, kind: 'credit_note', invoiceId: id, creditNoteId: noteId });
        const amountDue = inv.amountDue - outstanding;
        const settled = inv.status === 'finalized' && amountDue <= inv.amountPaid;
        const updated = await repo.updateInvoice(trx, ctx.tenantId, id, { credited: inv.credited + input.amount, amountDue, ...(settled ? { status: 'paid', paidAt: now, nextPaymentAttemptAt: null } : {}) });
        if (settled) await scheduleDunning(trx, ctx.tenantId, id, null, false);
        await core.record(trx, ctx, 'billing.credit_note.create', id, { creditNoteId: noteId, amount: input.amount, reason: input.reason });
        const payload: CreditNoteEventPayload = { creditNoteId: noteId, invoiceId: id, amount: input.amount, currency: inv.currency, outstandingAmount: outstanding, balanceAmount, refundAmount };
        await core.publish(trx, ctx, BILLING_EVENTS.creditNoteCreated, payload);
        if (settled) await core.publish(trx, ctx, BILLING_EVENTS.invoicePaid, invoicePayload(updated));
        return note;
      });
    },
    async creditBalance(orgId) {
      return scope.withTenantRead(orgId, async (trx) => {
        const b = await repo.getBalance(trx, orgId);
        if (b) return b;
        const customer = await subs.findCustomer(asBilling(trx), orgId);
        return { balance: 0, currency: customer?.currency ?? 'USD' };
      });
    },
    async redeemPromotionCode(ctx, code) {
      return scope.withTenant(ctx.tenantId, async (trx) => {
        await subs.lockCustomer(asBilling(trx), ctx.tenantId);
        const { now } = await c.clockNow(asBilling(trx), ctx.tenantId);
        const promo = await repo.redeemPromotionCode(trx, code.toUpperCase(), now);
        if (!promo) throw promotionCodeInvalid();
        const coupon = (await repo.findCoupon(trx, promo.couponId))!;
        const endsAt = coupon.duration === 'repeating' ? addMonthsAnchored(now, coupon.durationMonths!) : null;
        const d = await repo.replaceDiscount(trx, ctx.tenantId, { id: newId(), couponId: coupon.id, promotionCode: promo.code, coupon, startedAt: now, endsAt });
        await c.record(asBilling(trx), ctx, 'billing.discount.redeem', { type: 'billing_customer_discount', id: d.id }, { coupon: coupon.key, code: promo.code });
        return d;
      });
    },
    async getDiscount(orgId) {
      return scope.withTenantRead(orgId, async (trx) => (await repo.findActiveDiscount(trx, orgId)) ?? null);
    },
    async verifyInvoices(orgId, invoiceId) {
      return scope.withTenant(orgId, async (trx) => {
        const mismatches: Mismatch[] = [];
        let count = 0;
        let before: string | undefined;
        for (;;) {
          const page = invoiceId ? [await repo.findInvoice(trx, orgId, invoiceId)].filter((x): x is Invoice => !!x) : await repo.listInvoices(trx, orgId, { limit: 200, before });
          for (const inv of page) {
            if (inv.status === 'draft') continue;
            count++;
            mismatches.push(...(await verifyOne(trx, orgId, inv)));
          }
          if (invoiceId || page.length < 200) break;
          before = page.at(-1)!.id;
        }
        return { invoices: count, mismatches };
      });
    },
    invoiceOrgIds: (after, limit) => repo.invoiceOrgs(scope.app, after, limit),

    async createCoupon(ctx, input) {
      if ((input.percentOff === undefined) === (input.amountOff === undefined)) throw invalidCoupon('give exactly one of percentOff and amountOff');
      if (input.amountOff !== undefined && (!input.currency || currencyExponent(input.currency) === undefined)) throw unknownCurrency(input.currency ?? '(none)');
      if ((input.duration === 'repeating') !== (input.durationMonths !== undefined)) throw invalidCoupon('durationMonths goes with duration "repeating" (and only with it)');
      if (input.percentOff !== undefined && Math.round(input.percentOff * 10_000) < 1) throw invalidCoupon('percentOff must be at least 0.0001');
      return inPlatform(async (trx) => {
        const coupon = await repo.insertCoupon(trx, {
          id: newId(),
          key: input.key,
          name: input.name,
          percentOffPpm: input.percentOff === undefined ? null : Math.round(input.percentOff * 10_000),
          amountOff: input.amountOff ?? null,
          currency: input.amountOff === undefined ? null : input.currency!,
          duration: input.duration,
          durationMonths: input.durationMonths ?? null,
        });
        if (!coupon) throw invalidCoupon(`a coupon with key ${input.key} already exists`);
        await c.record(asBilling(trx), adminCtx(ctx), 'billing.coupon.create', { type: 'billing_coupon', id: coupon.id }, { key: coupon.key });
        return coupon;
      });
    },
    listCoupons: () => scope.withTenantRead(PLATFORM_AUDIT_TENANT, (trx) => repo.listCoupons(trx)),
    async createPromotionCode(ctx, input) {
      return inPlatform(async (trx) => {
        if (!(await repo.findCoupon(trx, input.couponId))) throw couponNotFound();
        const promo = await repo.insertPromotionCode(trx, { id: newId(), code: input.code.toUpperCase(), couponId: input.couponId, maxRedemptions: input.maxRedemptions ?? null, expiresAt: input.expiresAt ? new Date(input.expiresAt) : null });
        if (!promo) throw invalidCoupon(`the promotion code ${input.code} already exists`);
        await c.record(asBilling(trx), adminCtx(ctx), 'billing.promotion_code.create', { type: 'billing_promotion_code', id: promo.id }, { code: promo.code });
        return promo;
      });
    },
    listPromotionCodes: () => scope.withTenantRead(PLATFORM_AUDIT_TENANT, (trx) => repo.listPromotionCodes(trx)),
    async createTaxRate(ctx, input) {
      return inPlatform(async (trx) => {
        const rate = await repo.insertTaxRate(trx, { id: newId(), country: input.country, region: (input.region ?? '').toUpperCase(), name: input.name, percentagePpm: Math.round(input.percentage * 10_000), inclusive: input.inclusive ?? false });
        await c.record(asBilling(trx), adminCtx(ctx), 'billing.tax_rate.create', { type: 'billing_tax_rate', id: rate.id }, { country: rate.country, region: rate.region, percentagePpm: rate.percentagePpm });
        return rate;
      });
    },
    listTaxRates: () => scope.withTenantRead(PLATFORM_AUDIT_TENANT, (trx) => repo.listTaxRates(trx)),

    async invoiceForSubscriptionEvent(handle, orgId, change, event) {
      const reason = REASON_BY_CHANGE[change];
      if (!reason) return null;
      const trx = scope.join(handle);
      // A renewal by the wall clock is invoiced by the batched invoice run: its transaction queued the period;
      // queueing it again here (a no-op then) covers renewals committed by a release that did not queue them.
      if (change === 'renewed' && event && !(await c.clockNow(asBilling(trx), orgId)).onTestClock) {
        await enqueueInvoice(trx, orgId, event.subscriptionId, new Date(event.currentPeriodEnd));
        return null;
      }
      return core.invoicePending(trx, { ...systemActor('billing.invoices'), tenantId: orgId }, reason, { finalize: true });
    },
  };
}

export { formatMoney };
