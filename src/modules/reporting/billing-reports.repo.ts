import { sql, type Kysely, type Transaction } from 'kysely';
import type { DB } from '../../platform/db/database.ts';
import { amountFor, type Pricing } from '../billing/index.ts';
import { recurring, type ChargeFact, type SubscriptionFact } from './billing-metrics.ts';

/**
 * What billing reports read: billing's subscriptions, charges, prices, plans, test clocks and usage rollups,
 * read-only, in READ ONLY transactions (a replica when in rotation) — the same documented exception as
 * exports and the rebuild, through the columns listed here. (No invoice table: MRR is what subscriptions
 * are priced at, not what was invoiced.)
 */
export type BillingReportTables = Pick<
  DB,
  'billing_subscriptions' | 'billing_charges' | 'billing_prices' | 'billing_plans' | 'billing_test_clocks' | 'billing_usage_rollups' | 'billing_schedule'
>;
type Tx = Transaction<BillingReportTables>;

export interface OrgBillingFacts {
  now: Date;
  subscriptions: SubscriptionFact[];
  charges: ChargeFact[];
  usage: Array<{ month: string; metric: string; events: number; sum: string; max: string }>;
}

export interface PlanInfo {
  id: string;
  key: string;
  name: string;
}

/** The catalog's plans (global, small): keys and names for the reports. */
export async function plans(trx: Tx | Kysely<BillingReportTables>): Promise<Map<string, PlanInfo>> {
  const rows = await trx.selectFrom('billing_plans').select(['id', 'key', 'name']).execute();
  return new Map(rows.map((r) => [r.id, r]));
}

/** One org's billing history, as the metrics need it (inside withTenantRead). */
export async function orgFacts(trx: Tx, tenantId: string, usageFrom: Date, usageTo: Date): Promise<OrgBillingFacts> {
  const clock = await trx.selectFrom('billing_test_clocks').select('frozen_time').where('tenant_id', '=', tenantId).executeTakeFirst();
  const now = clock ? new Date(clock.frozen_time) : new Date();
  const subs = await trx
    .selectFrom('billing_subscriptions')
    .select(['id', 'plan_id', 'status', 'currency', 'trial_end', 'paused_at', 'cancel_at_period_end'])
    .where('tenant_id', '=', tenantId)
    .execute();
  const charges = await trx
    .selectFrom('billing_charges as c')
    .innerJoin('billing_prices as p', 'p.id', 'c.price_id')
    .select([
      'c.subscription_id',
      'c.kind',
      'c.quantity',
      'c.period_start',
      'c.period_end',
      'p.plan_id',
      'p.interval',
      'p.usage_type',
      'p.model',
      'p.flat_amount',
      'p.unit_amount',
      'p.tiers',
      'p.package_size',
    ])
    .where('c.tenant_id', '=', tenantId)
    .orderBy('c.period_start')
    .orderBy('c.id')
    .execute();
  const usage = await trx
    .selectFrom('billing_usage_rollups')
    .select([
      sql<string>`to_char(date_trunc('month', bucket at time zone 'UTC'), 'YYYY-MM')`.as('month'),
      'metric',
      sql<string>`sum(count)::text`.as('events'),
      sql<string>`sum(sum)::text`.as('sum'),
      sql<string>`max(max)::text`.as('max'),
    ])
    .where('tenant_id', '=', tenantId)
    .where('bucket', '>=', usageFrom)
    .where('bucket', '<', usageTo)
    .groupBy(['month', 'metric'])
    .execute();
  return {
    now,
    subscriptions: subs.map((s) => ({
      tenantId,
      id: s.id,
      planId: s.plan_id,
      status: s.status,
      currency: s.currency,
      trialEnd: s.trial_end ? new Date(s.trial_end) : null,
      pausedAt: s.paused_at ? new Date(s.paused_at) : null,
      cancelAtPeriodEnd: s.cancel_at_period_end,
      now,
    })),
    charges: charges.map((c) => {
      const pricing: Pricing = {
        model: c.model as Pricing['model'],
        flatAmount: Number(c.flat_amount),
        unitAmount: Number(c.unit_amount),
        tiers: c.tiers as unknown as Pricing['tiers'],
        packageSize: Number(c.package_size),
      };
      const amount = c.usage_type === 'metered' ? 0 : amountFor(pricing, Number(c.quantity));
      return {
        subscriptionId: c.subscription_id,
        kind: c.kind as ChargeFact['kind'],
        start: new Date(c.period_start),
        end: new Date(c.period_end),
        planId: c.plan_id,
        ...recurring(amount, c.interval),
      };
    }),
    usage: usage.map((u) => ({ month: u.month, metric: u.metric, events: Number(u.events), sum: u.sum, max: u.max })),
  };
}
