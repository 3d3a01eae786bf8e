import { sql, type Selectable } from 'kysely';
import type { DB } from '../../platform/db/database.ts';
import type { Interval } from './billing.calendar.ts';
import type { Trx } from './billing.repo.ts';

export interface Customer {
  id: string;
  email: string | null;
  name: string;
  address: Record<string, string>;
  currency: string;
  taxId: string | null;
  entitlementsVersion: number;
  version: number;
  createdAt: Date;
  updatedAt: Date;
}

export type SubscriptionStatus = 'trialing' | 'active' | 'past_due' | 'paused' | 'canceled';

export interface Subscription {
  id: string;
  planId: string;
  priceId: string;
  status: SubscriptionStatus;
  quantity: number;
  currency: string;
  interval: Interval;
  anchorAt: Date;
  currentPeriodStart: Date;
  currentPeriodEnd: Date;
  trialEnd: Date | null;
  cancelAtPeriodEnd: boolean;
  canceledAt: Date | null;
  pausedAt: Date | null;
  pastDueSince: Date | null;
  pendingPlanId: string | null;
  pendingPriceId: string | null;
  version: number;
  createdAt: Date;
  updatedAt: Date;
}

export interface Charge {
  id: string;
  subscriptionId: string;
  kind: 'subscription' | 'proration_charge' | 'proration_credit';
  amount: number;
  currency: string;
  quantity: number;
  priceId: string;
  description: string;
  periodStart: Date;
  periodEnd: Date;
  invoiceId: string | null;
  createdAt: Date;
}

export const toCustomer = (r: Selectable<DB['billing_customers']>): Customer => ({
  id: r.id,
  email: r.email ?? null,
  name: r.name,
  address: (typeof r.address === 'string' ? JSON.parse(r.address) : r.address) as Record<string, string>,
  currency: r.currency,
  taxId: r.tax_id ?? null,
  entitlementsVersion: Number(r.entitlements_version),
  version: r.version,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

export const toSubscription = (r: Selectable<DB['billing_subscriptions']>): Subscription => ({
  id: r.id,
  planId: r.plan_id,
  priceId: r.price_id,
  status: r.status as SubscriptionStatus,
  quantity: r.quantity,
  currency: r.currency,
  interval: r.interval as Interval,
  anchorAt: r.anchor_at,
  currentPeriodStart: r.current_period_start,
  currentPeriodEnd: r.current_period_end,
  trialEnd: r.trial_end ?? null,
  cancelAtPeriodEnd: r.cancel_at_period_end,
  canceledAt: r.canceled_at ?? null,
  pausedAt: r.paused_at ?? null,
  pastDueSince: r.past_due_since ?? null,
  pendingPlanId: r.pending_plan_id ?? null,
  pendingPriceId: r.pending_price_id ?? null,
  version: r.version,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

export const toCharge = (r: Selectable<DB['billing_charges']>): Charge => ({
  id: r.id,
  subscriptionId: r.subscription_id,
  kind: r.kind as Charge['kind'],
  amount: Number(r.amount),
  currency: r.currency,
  quantity: r.quantity,
  priceId: r.price_id,
  description: r.description,
  periodStart: r.period_start,
  periodEnd: r.period_end,
  invoiceId: r.invoice_id ?? null,
  createdAt: r.created_at,
});

/**
 * The org's customer row, created on first use, locked FOR UPDATE: every billing state change of an org
 * takes this lock first, so subscription changes of one org are serialized (and nothing else waits on it).
 */
export async function lockCustomer(trx: Trx, tenantId: string, currency = 'USD'): Promise<Customer> {
  // The org is the customer: one row per tenant, its id the org's id.
  await trx
    .insertInto('billing_customers')
    .values({ tenant_id: tenantId, id: tenantId, currency })
    .onConflict((oc) => oc.column('tenant_id').doNothing())
    .execute();
  const r = await trx.selectFrom('billing_customers').selectAll().where('tenant_id', '=', tenantId).forUpdate().executeTakeFirstOrThrow();
  return toCustomer(r);
}

export async function findCustomer(trx: Trx, tenantId: string): Promise<Customer | undefined> {
  const r = await trx.selectFrom('billing_customers').selectAll().where('tenant_id', '=', tenantId).executeTakeFirst();
  return r && toCustomer(r);
}

export type CustomerChanges = Partial<Pick<Customer, 'email' | 'name' | 'address' | 'currency' | 'taxId'>>;

export async function updateCustomer(trx: Trx, tenantId: string, c: CustomerChanges): Promise<Customer> {
  const r = await trx
    .updateTable('billing_customers')
    .set({
      email: c.email,
      name: c.name,
      address: c.address === undefined ? undefined : JSON.stringify(c.address),
      currency: c.currency,
      tax_id: c.taxId,
      version: sql<number>`version + 1`,
      updated_at: sql<Date>`now()`,
    })
    .where('tenant_id', '=', tenantId)
    .returningAll()
    .executeTakeFirstOrThrow();
  return toCustomer(r);
}

/** Bumps the version of what the org is entitled to (in the transaction that changes it). */
export async function bumpEntitlements(trx: Trx, tenantId: string): Promise<number> {
  const r = await trx
    .updateTable('billing_customers')
    .set({ entitlements_version: sql<number>`entitlements_version + 1` })
    .where('tenant_id', '=', tenantId)
    .returning('entitlements_version')
    .executeTakeFirstOrThrow();
  return Number(r.entitlements_version);
}

/** The org's live (not canceled) subscription. */
export async function findLiveSubscription(trx: Trx, tenantId: string): Promise<Subscription | undefined> {
  const r = await trx.selectFrom('billing_subscriptions').selectAll().where('tenant_id', '=', tenantId).where('status', '<>', 'canceled').executeTakeFirst();
  return r && toSubscription(r);
}

/** The live subscription, or the most recently canceled one. */
export async function findLatestSubscription(trx: Trx, tenantId: string): Promise<Subscription | undefined> {
  const r = await trx
    .selectFrom('billing_subscriptions')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .orderBy(sql`status = 'canceled'`)
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst();
  return r && toSubscription(r);
}

export async function insertSubscription(trx: Trx, tenantId: string, s: Omit<Subscription, 'version' | 'createdAt' | 'updatedAt'>): Promise<Subscription> {
  const r = await trx
    .insertInto('billing_subscriptions')
    .values({
      tenant_id: tenantId,
      id: s.id,
      plan_id: s.planId,
      price_id: s.priceId,
      status: s.status,
      quantity: s.quantity,
      currency: s.currency,
      interval: s.interval,
      anchor_at: s.anchorAt,
      current_period_start: s.currentPeriodStart,
      current_period_end: s.currentPeriodEnd,
      trial_end: s.trialEnd,
      cancel_at_period_end: s.cancelAtPeriodEnd,
      canceled_at: s.canceledAt,
      paused_at: s.pausedAt,
      past_due_since: s.pastDueSince,
      pending_plan_id: s.pendingPlanId,
      pending_price_id: s.pendingPriceId,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  return toSubscription(r);
}

export type SubscriptionChanges = Partial<Omit<Subscription, 'id' | 'version' | 'createdAt' | 'updatedAt' | 'currency'>>;

export async function updateSubscription(trx: Trx, tenantId: string, id: string, c: SubscriptionChanges): Promise<Subscription> {
  const r = await trx
    .updateTable('billing_subscriptions')
    .set({
      plan_id: c.planId,
      price_id: c.priceId,
      status: c.status,
      quantity: c.quantity,
      interval: c.interval,
      anchor_at: c.anchorAt,
      current_period_start: c.currentPeriodStart,
      current_period_end: c.currentPeriodEnd,
      trial_end: c.trialEnd,
      cancel_at_period_end: c.cancelAtPeriodEnd,
      canceled_at: c.canceledAt,
      paused_at: c.pausedAt,
      past_due_since: c.pastDueSince,
      pending_plan_id: c.pendingPlanId,
      pending_price_id: c.pendingPriceId,
      version: sql<number>`version + 1`,
      updated_at: sql<Date>`now()`,
    })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirstOrThrow();
  return toSubscription(r);
}

export async function insertCharges(trx: Trx, tenantId: string, charges: Omit<Charge, 'createdAt' | 'invoiceId'>[]): Promise<void> {
  if (charges.length === 0) return;
  await trx
    .insertInto('billing_charges')
    .values(
      charges.map((c) => ({
        tenant_id: tenantId,
        id: c.id,
        subscription_id: c.subscriptionId,
        kind: c.kind,
        amount: c.amount,
        currency: c.currency,
        quantity: c.quantity,
        price_id: c.priceId,
        description: c.description,
        period_start: c.periodStart,
        period_end: c.periodEnd,
      })),
    )
    .execute();
}

export async function listCharges(trx: Trx, tenantId: string, subscriptionId: string | undefined, limit: number, afterId?: string): Promise<Charge[]> {
  let q = trx.selectFrom('billing_charges').selectAll().where('tenant_id', '=', tenantId);
  if (subscriptionId) q = q.where('subscription_id', '=', subscriptionId);
  if (afterId) q = q.where('id', '>', afterId);
  return (await q.orderBy('id').limit(limit).execute()).map(toCharge);
}

// ---------------------------------------------------------------- test clocks and the schedule

export async function findTestClock(trx: Trx, tenantId: string): Promise<{ id: string; frozenTime: Date } | undefined> {
  const r = await trx.selectFrom('billing_test_clocks').select(['id', 'frozen_time']).where('tenant_id', '=', tenantId).executeTakeFirst();
  return r && { id: r.id, frozenTime: r.frozen_time };
}

export async function setTestClock(trx: Trx, tenantId: string, id: string, frozenTime: Date): Promise<{ id: string; frozenTime: Date }> {
  const r = await trx
    .insertInto('billing_test_clocks')
    .values({ tenant_id: tenantId, id, frozen_time: frozenTime })
    .onConflict((oc) => oc.column('tenant_id').doUpdateSet({ frozen_time: frozenTime, updated_at: sql<Date>`now()` }))
    .returning(['id', 'frozen_time'])
    .executeTakeFirstOrThrow();
  return { id: r.id, frozenTime: r.frozen_time };
}

export async function deleteTestClock(trx: Trx, tenantId: string): Promise<boolean> {
  const r = await trx.deleteFrom('billing_test_clocks').where('tenant_id', '=', tenantId).executeTakeFirst();
  return Number(r.numDeletedRows) > 0;
}

/** When the org's subscription next needs attention (null: never, e.g. canceled). */
export async function setSchedule(trx: Trx, tenantId: string, dueAt: Date | null, onTestClock: boolean): Promise<void> {
  if (dueAt === null) {
    await trx.deleteFrom('billing_schedule').where('tenant_id', '=', tenantId).execute();
    return;
  }
  await trx
    .insertInto('billing_schedule')
    .values({ tenant_id: tenantId, due_at: dueAt, on_test_clock: onTestClock })
    .onConflict((oc) => oc.column('tenant_id').doUpdateSet({ due_at: dueAt, on_test_clock: onTestClock }))
    .execute();
}

/** Orgs whose subscription is due by the wall clock (orgs on a test clock are advanced by their clock). */
export async function dueTenants(app: Trx | import('kysely').Kysely<import('./billing.repo.ts').BillingTables>, now: Date, limit: number): Promise<string[]> {
  const rows = await app
    .selectFrom('billing_schedule')
    .select('tenant_id')
    .where('due_at', '<=', now)
    .where('on_test_clock', '=', false)
    .orderBy('due_at')
    .limit(limit)
    .execute();
  return rows.map((r) => r.tenant_id);
}
