import { sql, type Kysely, type Selectable, type Transaction } from 'kysely';
import type { Database, DB, DbScope } from '../../platform/db/database.ts';
import type { Interval } from './billing.calendar.ts';
import type { Pricing, PricingModel, Tier } from './billing.pricing.ts';

/** Every table billing owns (see migrations/0080_billing_core.ts). */
export type BillingTables = Pick<
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
  | 'billing_usage_rollups'
  | 'billing_usage_uniques'
  | 'billing_addons'
  | 'billing_subscription_addons'
  | 'billing_notices'
>;
export type Trx = Transaction<BillingTables>;
/** Catalog reads also run outside a transaction (global tables, no tenant context needed). */
export type Q = Kysely<BillingTables>;

export function billingScope(db: Database): DbScope<BillingTables> {
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
    'billing_usage_rollups',
    'billing_usage_uniques',
    'billing_addons',
    'billing_subscription_addons',
    'billing_notices',
  );
}

// ---------------------------------------------------------------- catalog (global tables)

export interface Product {
  id: string;
  key: string;
  name: string;
  description: string;
  createdAt: Date;
}

export type ChangeTiming = 'now' | 'period_end';

export interface Plan {
  id: string;
  productId: string;
  key: string;
  name: string;
  description: string;
  rank: number;
  upgradeTiming: ChangeTiming;
  downgradeTiming: ChangeTiming;
  public: boolean;
  isDefault: boolean;
  createdAt: Date;
  updatedAt: Date;
}

/** What a price version grants: boolean features, numeric limits, and metered quotas per billing period. */
export interface EntitlementSpec {
  features: string[];
  limits: Record<string, number>;
  quotas: Record<string, number>;
  /** Per quota metric: 'hard' refuses the guarded action at 100 % (402), 'soft' (default) only notifies. */
  enforcement?: Record<string, 'soft' | 'hard'>;
}

export interface Price extends Pricing {
  id: string;
  planId: string;
  version: number;
  currency: string;
  interval: Interval;
  usageType: 'licensed' | 'metered';
  perSeat: boolean;
  metric: string | null;
  trialDays: number;
  entitlements: EntitlementSpec;
  createdAt: Date;
}

export interface Meter {
  key: string;
  name: string;
  aggregation: 'count' | 'sum' | 'max' | 'unique_count' | 'latest' | 'time_weighted_sum';
  property: string | null;
}

const json = <T>(v: unknown): T => (typeof v === 'string' ? JSON.parse(v) : v) as T;

const toProduct = (r: Selectable<DB['billing_products']>): Product => ({ id: r.id, key: r.key, name: r.name, description: r.description, createdAt: r.created_at });
const toPlan = (r: Selectable<DB['billing_plans']>): Plan => ({
  id: r.id,
  productId: r.product_id,
  key: r.key,
  name: r.name,
  description: r.description,
  rank: r.rank,
  upgradeTiming: r.upgrade_timing as ChangeTiming,
  downgradeTiming: r.downgrade_timing as ChangeTiming,
  public: r.public,
  isDefault: r.is_default,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});
const toPrice = (r: Selectable<DB['billing_prices']>): Price => {
  const ent = json<Partial<EntitlementSpec>>(r.entitlements);
  return {
    id: r.id,
    planId: r.plan_id,
    version: r.version,
    currency: r.currency,
    interval: r.interval as Interval,
    usageType: r.usage_type as Price['usageType'],
    model: r.model as PricingModel,
    perSeat: r.per_seat,
    flatAmount: Number(r.flat_amount),
    unitAmount: Number(r.unit_amount),
    tiers: json<Tier[]>(r.tiers),
    packageSize: r.package_size,
    metric: r.metric ?? null,
    trialDays: r.trial_days,
    entitlements: { features: ent.features ?? [], limits: ent.limits ?? {}, quotas: ent.quotas ?? {}, ...(ent.enforcement ? { enforcement: ent.enforcement } : {}) },
    createdAt: r.created_at,
  };
};

export async function insertProduct(trx: Trx, p: Omit<Product, 'createdAt'>): Promise<Product | undefined> {
  const row = await trx
    .insertInto('billing_products')
    .values({ id: p.id, key: p.key, name: p.name, description: p.description })
    .onConflict((oc) => oc.column('key').doNothing())
    .returningAll()
    .executeTakeFirst();
  return row && toProduct(row);
}

export async function listProducts(trx: Q): Promise<Product[]> {
  return (await trx.selectFrom('billing_products').selectAll().orderBy('key').limit(500).execute()).map(toProduct);
}

export async function findProduct(trx: Q, id: string): Promise<Product | undefined> {
  const r = await trx.selectFrom('billing_products').selectAll().where('id', '=', id).executeTakeFirst();
  return r && toProduct(r);
}

export async function insertPlan(trx: Trx, p: Omit<Plan, 'createdAt' | 'updatedAt'>): Promise<Plan | undefined> {
  if (p.isDefault) await trx.updateTable('billing_plans').set({ is_default: false }).where('is_default', '=', true).execute();
  const row = await trx
    .insertInto('billing_plans')
    .values({
      id: p.id,
      product_id: p.productId,
      key: p.key,
      name: p.name,
      description: p.description,
      rank: p.rank,
      upgrade_timing: p.upgradeTiming,
      downgrade_timing: p.downgradeTiming,
      public: p.public,
      is_default: p.isDefault,
    })
    .onConflict((oc) => oc.column('key').doNothing())
    .returningAll()
    .executeTakeFirst();
  return row && toPlan(row);
}

export type PlanChanges = Partial<Pick<Plan, 'name' | 'description' | 'rank' | 'upgradeTiming' | 'downgradeTiming' | 'public' | 'isDefault'>>;

export async function updatePlan(trx: Trx, id: string, c: PlanChanges): Promise<Plan | undefined> {
  if (c.isDefault) await trx.updateTable('billing_plans').set({ is_default: false }).where('is_default', '=', true).where('id', '<>', id).execute();
  const row = await trx
    .updateTable('billing_plans')
    .set({
      name: c.name,
      description: c.description,
      rank: c.rank,
      upgrade_timing: c.upgradeTiming,
      downgrade_timing: c.downgradeTiming,
      public: c.public,
      is_default: c.isDefault,
      updated_at: sql<Date>`now()`,
    })
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirst();
  return row && toPlan(row);
}

export async function findPlan(trx: Q, id: string): Promise<Plan | undefined> {
  const r = await trx.selectFrom('billing_plans').selectAll().where('id', '=', id).executeTakeFirst();
  return r && toPlan(r);
}

export async function findPlanByKey(trx: Q, key: string): Promise<Plan | undefined> {
  const r = await trx.selectFrom('billing_plans').selectAll().where('key', '=', key).executeTakeFirst();
  return r && toPlan(r);
}

export async function findDefaultPlan(trx: Q): Promise<Plan | undefined> {
  const r = await trx.selectFrom('billing_plans').selectAll().where('is_default', '=', true).executeTakeFirst();
  return r && toPlan(r);
}

export async function listPlans(trx: Q, opts: { publicOnly: boolean }): Promise<Plan[]> {
  let q = trx.selectFrom('billing_plans').selectAll();
  if (opts.publicOnly) q = q.where('public', '=', true);
  return (await q.orderBy('rank').orderBy('key').limit(500).execute()).map(toPlan);
}

/** Appends a version: the next number for (plan, currency, interval); concurrent appends retry on the unique key. */
export async function insertPrice(trx: Trx, p: Omit<Price, 'version' | 'createdAt'>): Promise<Price> {
  const row = await trx
    .insertInto('billing_prices')
    .values((eb) => ({
      id: p.id,
      plan_id: p.planId,
      version: eb
        .selectFrom('billing_prices')
        .select(sql<number>`coalesce(max(version), 0) + 1`.as('v'))
        .where('plan_id', '=', p.planId)
        .where('currency', '=', p.currency)
        .where('interval', '=', p.interval),
      currency: p.currency,
      interval: p.interval,
      usage_type: p.usageType,
      model: p.model,
      per_seat: p.perSeat,
      flat_amount: p.flatAmount,
      unit_amount: p.unitAmount,
      tiers: JSON.stringify(p.tiers),
      package_size: p.packageSize,
      metric: p.metric,
      trial_days: p.trialDays,
      entitlements: JSON.stringify(p.entitlements),
    }))
    .returningAll()
    .executeTakeFirstOrThrow();
  return toPrice(row);
}

export async function findPrice(trx: Q, id: string): Promise<Price | undefined> {
  const r = await trx.selectFrom('billing_prices').selectAll().where('id', '=', id).executeTakeFirst();
  return r && toPrice(r);
}

export async function listPrices(trx: Q, planIds: string[], opts: { currentOnly: boolean }): Promise<Price[]> {
  if (planIds.length === 0) return [];
  let q = trx.selectFrom('billing_prices as p').selectAll('p').where('p.plan_id', 'in', planIds);
  if (opts.currentOnly) {
    q = q.where(({ not, exists, selectFrom }) =>
      not(
        exists(
          selectFrom('billing_prices as n')
            .select('n.id')
            .whereRef('n.plan_id', '=', 'p.plan_id')
            .whereRef('n.currency', '=', 'p.currency')
            .whereRef('n.interval', '=', 'p.interval')
            .whereRef('n.version', '>', 'p.version'),
        ),
      ),
    );
  }
  return (await q.orderBy('p.plan_id').orderBy('p.currency').orderBy('p.interval').orderBy('p.version', 'desc').limit(2000).execute()).map(toPrice);
}

/** The newest version of the plan's price in this currency and interval. */
export async function currentPrice(trx: Q, planId: string, currency: string, interval: Interval): Promise<Price | undefined> {
  const r = await trx
    .selectFrom('billing_prices')
    .selectAll()
    .where('plan_id', '=', planId)
    .where('currency', '=', currency)
    .where('interval', '=', interval)
    .orderBy('version', 'desc')
    .limit(1)
    .executeTakeFirst();
  return r && toPrice(r);
}

export async function upsertMeter(trx: Trx, m: Meter): Promise<Meter> {
  const r = await trx
    .insertInto('billing_meters')
    .values({ key: m.key, name: m.name, aggregation: m.aggregation, property: m.property })
    .onConflict((oc) => oc.column('key').doUpdateSet({ name: m.name, aggregation: m.aggregation, property: m.property }))
    .returningAll()
    .executeTakeFirstOrThrow();
  return { key: r.key, name: r.name, aggregation: r.aggregation as Meter['aggregation'], property: r.property ?? null };
}

export async function listMeters(trx: Q): Promise<Meter[]> {
  const rows = await trx.selectFrom('billing_meters').selectAll().orderBy('key').limit(1000).execute();
  return rows.map((r) => ({ key: r.key, name: r.name, aggregation: r.aggregation as Meter['aggregation'], property: r.property ?? null }));
}
