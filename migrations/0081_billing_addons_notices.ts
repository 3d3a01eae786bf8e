import { sql, type Kysely } from 'kysely';
import { grantApp, protectTenantTable } from '../src/platform/migrate/helpers.ts';

/** Only adds tables and widens a check (added NOT VALID, validated by 0089): the previous release runs unchanged. */
export const phase = 'expand';

/**
 * Billing, continued (issue #13):
 * - `billing_addons`: extra priced items of the catalog (platform data, insert-only like price versions),
 *   each granting entitlements on top of the plan's (features; limits and quotas per unit of quantity).
 * - `billing_subscription_addons`: an org's add-ons on its subscription (quantity; removed ones stay as history).
 * - `billing_notices`: the e-mails billing has sent (trial ending, limit reached), one row per
 *   (org, kind, dedupe key): the claim that makes "at most once per limit per period" hold across retries.
 * - meters may aggregate as `time_weighted_sum` (a level held over time, e.g. seats or GB, integrated).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table billing_addons (
      id uuid primary key,
      key text not null unique check (key ~ '^[a-z][a-z0-9_.-]{1,63}$'),
      name text not null check (char_length(name) between 1 and 100),
      currency text not null check (currency ~ '^[A-Z]{3}$'),
      interval text not null check (interval in ('month', 'year')),
      -- per unit of quantity and period, in minor units
      amount bigint not null check (amount >= 0),
      entitlements jsonb not null default '{}',
      public boolean not null default true,
      created_at timestamptz(3) not null default now()
    )`.execute(db);
  await grantApp(db, 'billing_addons', ['select', 'insert']);

  await sql`
    create table billing_subscription_addons (
      tenant_id uuid not null,
      id uuid not null,
      subscription_id uuid not null,
      addon_id uuid not null references billing_addons (id),
      quantity integer not null check (quantity > 0),
      added_at timestamptz(3) not null,
      removed_at timestamptz(3),
      version integer not null default 1,
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now(),
      primary key (tenant_id, id),
      foreign key (tenant_id, subscription_id) references billing_subscriptions (tenant_id, id)
    )`.execute(db);
  await sql`create unique index billing_subscription_addons_live on billing_subscription_addons (tenant_id, subscription_id, addon_id) where removed_at is null`.execute(db);
  await protectTenantTable(db, 'billing_subscription_addons', ['select', 'insert', 'update']);

  await sql`
    create table billing_notices (
      tenant_id uuid not null,
      id uuid not null,
      kind text not null,
      dedupe_key text not null,
      event_id text,
      created_at timestamptz(3) not null default now(),
      primary key (tenant_id, id),
      unique (tenant_id, kind, dedupe_key)
    )`.execute(db);
  await protectTenantTable(db, 'billing_notices', ['select', 'insert']);

  await sql`alter table billing_meters drop constraint billing_meters_aggregation_check`.execute(db);
  await sql`
    alter table billing_meters add constraint billing_meters_aggregation_check
      check (aggregation in ('count', 'sum', 'max', 'unique_count', 'latest', 'time_weighted_sum')) not valid`.execute(db);
}
