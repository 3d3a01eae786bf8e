import { sql, type Kysely } from 'kysely';
import { grantApp, protectTenantTable } from '../src/platform/migrate/helpers.ts';

/** Only adds tables: the previous release runs unchanged on the migrated schema. */
export const phase = 'expand';

/**
 * Billing (issue #13). The catalog (products, plans, immutable price versions, meters) is platform data
 * managed by platform admins: global tables, readable by every org. Customers, subscriptions, the
 * charges they owe (the invoice items issue #14 turns into invoices), test clocks and usage are
 * tenant-owned (composite keys, RLS). `billing_schedule` is the one cross-tenant index of "when does
 * this org's subscription next need attention" the renewal job scans (it holds no billing data).
 * Money: bigint minor units + ISO 4217 currency. Times: timestamptz(3), UTC.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table billing_products (
      id uuid primary key,
      key text not null unique check (key ~ '^[a-z][a-z0-9_-]{1,39}$'),
      name text not null check (char_length(name) between 1 and 100),
      description text not null default '' check (char_length(description) <= 1000),
      created_at timestamptz(3) not null default now()
    )`.execute(db);
  await grantApp(db, 'billing_products', ['select', 'insert', 'update']);

  await sql`
    create table billing_plans (
      id uuid primary key,
      product_id uuid not null references billing_products (id),
      key text not null unique check (key ~ '^[a-z][a-z0-9_-]{1,39}$'),
      name text not null check (char_length(name) between 1 and 100),
      description text not null default '' check (char_length(description) <= 1000),
      -- Higher rank = bigger plan: moving up is an upgrade, down a downgrade.
      rank integer not null default 0,
      upgrade_timing text not null default 'now' check (upgrade_timing in ('now', 'period_end')),
      downgrade_timing text not null default 'period_end' check (downgrade_timing in ('now', 'period_end')),
      public boolean not null default true,
      -- The plan of an org without a subscription (its entitlements apply); at most one.
      is_default boolean not null default false,
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now()
    )`.execute(db);
  await sql`create unique index billing_plans_one_default on billing_plans ((true)) where is_default`.execute(db);
  await grantApp(db, 'billing_plans', ['select', 'insert', 'update']);

  // Immutable: the app role may only insert and read; a new price is a new version.
  await sql`
    create table billing_prices (
      id uuid primary key,
      plan_id uuid not null references billing_plans (id),
      version integer not null check (version > 0),
      currency text not null check (currency ~ '^[A-Z]{3}$'),
      interval text not null check (interval in ('month', 'year')),
      usage_type text not null default 'licensed' check (usage_type in ('licensed', 'metered')),
      model text not null check (model in ('flat', 'per_unit', 'tiered', 'volume', 'package')),
      per_seat boolean not null default false,
      flat_amount bigint not null default 0 check (flat_amount >= 0),
      unit_amount bigint not null default 0 check (unit_amount >= 0),
      tiers jsonb not null default '[]',
      package_size integer not null default 1 check (package_size > 0),
      metric text,
      trial_days integer not null default 0 check (trial_days between 0 and 730),
      entitlements jsonb not null default '{}',
      created_at timestamptz(3) not null default now(),
      unique (plan_id, currency, interval, version)
    )`.execute(db);
  await grantApp(db, 'billing_prices', ['select', 'insert']);

  await sql`
    create table billing_meters (
      key text primary key check (key ~ '^[a-z][a-z0-9_.-]{1,63}$'),
      name text not null check (char_length(name) between 1 and 100),
      aggregation text not null check (aggregation in ('count', 'sum', 'max', 'unique_count', 'latest')),
      -- unique_count: the property whose distinct values are counted.
      property text check (property is null or char_length(property) between 1 and 100),
      created_at timestamptz(3) not null default now()
    )`.execute(db);
  await grantApp(db, 'billing_meters', ['select', 'insert', 'update']);

  await sql`
    create table billing_customers (
      tenant_id uuid not null,
      id uuid not null,
      email text check (email is null or char_length(email) <= 254),
      name text not null default '' check (char_length(name) <= 200),
      address jsonb not null default '{}',
      currency text not null default 'USD' check (currency ~ '^[A-Z]{3}$'),
      tax_id text check (tax_id is null or char_length(tax_id) <= 64),
      -- Bumped by every change of what the org is entitled to: the version of its cached snapshot.
      entitlements_version bigint not null default 1,
      version integer not null default 1,
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now(),
      primary key (tenant_id, id),
      unique (tenant_id)
    )`.execute(db);
  await protectTenantTable(db, 'billing_customers', ['select', 'insert', 'update']);

  await sql`
    create table billing_subscriptions (
      tenant_id uuid not null,
      id uuid not null,
      plan_id uuid not null,
      price_id uuid not null,
      status text not null check (status in ('trialing', 'active', 'past_due', 'paused', 'canceled')),
      quantity integer not null default 1 check (quantity >= 0),
      currency text not null,
      interval text not null check (interval in ('month', 'year')),
      anchor_at timestamptz(3) not null,
      current_period_start timestamptz(3) not null,
      current_period_end timestamptz(3) not null,
      trial_end timestamptz(3),
      cancel_at_period_end boolean not null default false,
      canceled_at timestamptz(3),
      paused_at timestamptz(3),
      past_due_since timestamptz(3),
      pending_price_id uuid,
      pending_plan_id uuid,
      version integer not null default 1,
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now(),
      primary key (tenant_id, id)
    )`.execute(db);
  // One live subscription per org; canceled ones stay as history.
  await sql`create unique index billing_subscriptions_live on billing_subscriptions (tenant_id) where status <> 'canceled'`.execute(db);
  await protectTenantTable(db, 'billing_subscriptions', ['select', 'insert', 'update']);

  // What a subscription owes: invoice items that issue #14 collects into invoices (invoice_id set then).
  await sql`
    create table billing_charges (
      tenant_id uuid not null,
      id uuid not null,
      subscription_id uuid not null,
      kind text not null check (kind in ('subscription', 'proration_charge', 'proration_credit')),
      amount bigint not null,
      currency text not null,
      quantity integer not null default 1,
      price_id uuid not null,
      description text not null,
      period_start timestamptz(3) not null,
      period_end timestamptz(3) not null,
      invoice_id uuid,
      created_at timestamptz(3) not null default now(),
      primary key (tenant_id, id),
      foreign key (tenant_id, subscription_id) references billing_subscriptions (tenant_id, id)
    )`.execute(db);
  await sql`create index billing_charges_subscription_idx on billing_charges (tenant_id, subscription_id, id)`.execute(db);
  await protectTenantTable(db, 'billing_charges', ['select', 'insert', 'update']);

  await sql`
    create table billing_test_clocks (
      tenant_id uuid not null,
      id uuid not null,
      frozen_time timestamptz(3) not null,
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now(),
      primary key (tenant_id, id),
      unique (tenant_id)
    )`.execute(db);
  await protectTenantTable(db, 'billing_test_clocks');

  await sql`
    create table billing_schedule (
      tenant_id uuid primary key,
      due_at timestamptz(3) not null,
      -- Orgs on a test clock are advanced by their clock, not by the wall clock.
      on_test_clock boolean not null default false
    )`.execute(db);
  await sql`create index billing_schedule_due on billing_schedule (due_at) where not on_test_clock`.execute(db);
  await grantApp(db, 'billing_schedule', ['select', 'insert', 'update', 'delete']);

  // Raw usage: the row is its own dedupe record (primary key (tenant_id, key)), so an event and its
  // idempotency claim commit or roll back together.
  await sql`
    create table billing_usage_events (
      tenant_id uuid not null,
      key text not null check (char_length(key) between 1 and 200),
      metric text not null,
      occurred_at timestamptz(3) not null,
      value numeric not null,
      properties jsonb not null default '{}',
      received_at timestamptz(3) not null default now(),
      primary key (tenant_id, key)
    )`.execute(db);
  await protectTenantTable(db, 'billing_usage_events', ['select', 'insert', 'delete']);

  // Hourly rollups, updated in the ingesting transaction: queries read these, never the raw events.
  await sql`
    create table billing_usage_rollups (
      tenant_id uuid not null,
      metric text not null,
      bucket timestamptz(3) not null,
      count bigint not null,
      sum numeric not null,
      max numeric not null,
      latest_value numeric not null,
      latest_at timestamptz(3) not null,
      primary key (tenant_id, metric, bucket)
    )`.execute(db);
  await protectTenantTable(db, 'billing_usage_rollups', ['select', 'insert', 'update']);

  await sql`
    create table billing_usage_uniques (
      tenant_id uuid not null,
      metric text not null,
      bucket timestamptz(3) not null,
      value text not null,
      primary key (tenant_id, metric, bucket, value)
    )`.execute(db);
  await protectTenantTable(db, 'billing_usage_uniques', ['select', 'insert']);
}
