import { sql, type Kysely } from 'kysely';
import { grantApp, protectTenantTable } from '../src/platform/migrate/helpers.ts';

/** Only adds tables: the previous release runs unchanged on the migrated schema. */
export const phase = 'expand';

/**
 * Billing II (issue #14): invoices and their lines, gap-free invoice numbers, payment methods and payment
 * attempts, coupons / promotion codes / customer discounts, tax rates, credit notes and the customer credit
 * balance. Tenant data under RLS; the catalog-like tables (coupons, promotion codes, tax rates) are global,
 * managed by platform admins. Two global indexes hold no billing data, only "which org, when":
 * `billing_dunning_schedule` (payment retries due) and `billing_payment_index` (attempts by update time,
 * for reconciliation). Money: bigint minor units + ISO 4217 currency.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table billing_invoices (
      tenant_id uuid not null,
      id uuid not null,
      -- Assigned at finalization only, from billing_invoice_sequences: 1, 2, 3, … per org, no gaps.
      seq bigint,
      number text,
      status text not null check (status in ('draft', 'finalized', 'paid', 'void', 'uncollectible')),
      reason text not null check (reason in ('subscription_create', 'subscription_cycle', 'subscription_update', 'manual')),
      subscription_id uuid,
      currency text not null check (currency ~ '^[A-Z]{3}$'),
      period_start timestamptz(3) not null,
      period_end timestamptz(3) not null,
      customer jsonb not null default '{}',
      -- Usage events received after this instant belong to a later invoice (recomputation reads the same set).
      usage_cutoff timestamptz(3) not null,
      discount jsonb,
      tax jsonb,
      subtotal bigint not null default 0,
      discount_total bigint not null default 0,
      tax_total bigint not null default 0,
      total bigint not null default 0,
      credit_applied bigint not null default 0,
      credited bigint not null default 0,
      amount_due bigint not null default 0,
      amount_paid bigint not null default 0,
      attempt_count integer not null default 0,
      next_payment_attempt_at timestamptz(3),
      pdf_key text,
      created_at timestamptz(3) not null default now(),
      finalized_at timestamptz(3),
      paid_at timestamptz(3),
      voided_at timestamptz(3),
      uncollectible_at timestamptz(3),
      updated_at timestamptz(3) not null default now(),
      version integer not null default 1,
      primary key (tenant_id, id),
      unique (tenant_id, seq),
      check ((seq is null) = (status = 'draft'))
    )`.execute(db);
  await sql`create index billing_invoices_open_idx on billing_invoices (tenant_id, status) where status in ('draft', 'finalized')`.execute(db);
  await protectTenantTable(db, 'billing_invoices', ['select', 'insert', 'update', 'delete']);

  await sql`
    create table billing_invoice_lines (
      tenant_id uuid not null,
      id uuid not null,
      invoice_id uuid not null,
      position integer not null,
      kind text not null check (kind in ('subscription', 'proration_charge', 'proration_credit', 'usage')),
      description text not null,
      charge_id uuid,
      subscription_id uuid,
      price_id uuid,
      price_version integer,
      quantity bigint not null default 1,
      unit_amount bigint,
      amount bigint not null,
      discount_amount bigint not null default 0,
      tax_amount bigint not null default 0,
      period_start timestamptz(3) not null,
      period_end timestamptz(3) not null,
      -- How the line was computed (price model and amounts, usage window, aggregate and its hash).
      computation jsonb not null,
      primary key (tenant_id, id),
      foreign key (tenant_id, invoice_id) references billing_invoices (tenant_id, id) on delete cascade
    )`.execute(db);
  await sql`create index billing_invoice_lines_invoice_idx on billing_invoice_lines (tenant_id, invoice_id, position)`.execute(db);
  await protectTenantTable(db, 'billing_invoice_lines', ['select', 'insert', 'update', 'delete']);

  // The org's last invoice number: incremented in the finalizing transaction, so a rollback leaves no gap.
  await sql`
    create table billing_invoice_sequences (
      tenant_id uuid not null primary key,
      last_seq bigint not null
    )`.execute(db);
  await protectTenantTable(db, 'billing_invoice_sequences', ['select', 'insert', 'update']);

  // Which orgs have invoices (across orgs, for `plinth billing verify`); no billing data.
  await sql`
    create table billing_invoice_orgs (
      tenant_id uuid not null primary key,
      last_finalized_at timestamptz(3) not null
    )`.execute(db);
  await grantApp(db, 'billing_invoice_orgs', ['select', 'insert', 'update']);

  // Metered usage billed so far per subscription and metric: the next usage line starts where this ends.
  await sql`
    create table billing_usage_cursors (
      tenant_id uuid not null,
      subscription_id uuid not null,
      metric text not null,
      billed_to timestamptz(3) not null,
      cutoff timestamptz(3) not null,
      primary key (tenant_id, subscription_id, metric)
    )`.execute(db);
  await protectTenantTable(db, 'billing_usage_cursors', ['select', 'insert', 'update']);

  await sql`
    create table billing_payment_methods (
      tenant_id uuid not null primary key,
      gateway text not null,
      gateway_customer_id text not null,
      payment_method_id text not null,
      brand text,
      last4 text,
      updated_at timestamptz(3) not null default now()
    )`.execute(db);
  await protectTenantTable(db, 'billing_payment_methods', ['select', 'insert', 'update']);

  await sql`
    create table billing_payment_attempts (
      tenant_id uuid not null,
      id uuid not null,
      invoice_id uuid not null,
      attempt_no integer not null check (attempt_no > 0),
      idempotency_key text not null,
      gateway text not null,
      gateway_payment_id text,
      status text not null check (status in ('succeeded', 'processing', 'requires_action', 'failed', 'canceled')),
      failure_code text,
      failure_message text,
      amount bigint not null,
      currency text not null,
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now(),
      primary key (tenant_id, id),
      unique (tenant_id, invoice_id, attempt_no),
      foreign key (tenant_id, invoice_id) references billing_invoices (tenant_id, id)
    )`.execute(db);
  await sql`create index billing_payment_attempts_gateway_idx on billing_payment_attempts (tenant_id, gateway_payment_id)`.execute(db);
  await protectTenantTable(db, 'billing_payment_attempts', ['select', 'insert', 'update']);

  // Attempts by last change, across orgs (reconciliation pages through it); no payment data.
  await sql`
    create table billing_payment_index (
      tenant_id uuid not null,
      attempt_id uuid not null,
      updated_at timestamptz(3) not null,
      primary key (tenant_id, attempt_id)
    )`.execute(db);
  await sql`create index billing_payment_index_updated on billing_payment_index (updated_at, tenant_id, attempt_id)`.execute(db);
  await grantApp(db, 'billing_payment_index', ['select', 'insert', 'update']);

  // Payment retries due (dunning), across orgs; orgs on a test clock are run by their clock.
  await sql`
    create table billing_dunning_schedule (
      tenant_id uuid not null,
      invoice_id uuid not null,
      due_at timestamptz(3) not null,
      on_test_clock boolean not null default false,
      primary key (tenant_id, invoice_id)
    )`.execute(db);
  await sql`create index billing_dunning_schedule_due on billing_dunning_schedule (due_at) where not on_test_clock`.execute(db);
  await grantApp(db, 'billing_dunning_schedule', ['select', 'insert', 'update', 'delete']);

  await sql`
    create table billing_coupons (
      id uuid primary key,
      key text not null unique check (key ~ '^[a-z0-9][a-z0-9_-]{1,39}$'),
      name text not null check (char_length(name) between 1 and 100),
      -- Parts per million of the amount (25 % = 250000), or a fixed amount in one currency.
      percent_off_ppm integer check (percent_off_ppm between 1 and 1000000),
      amount_off bigint check (amount_off > 0),
      currency text check (currency ~ '^[A-Z]{3}$'),
      duration text not null check (duration in ('once', 'repeating', 'forever')),
      duration_months integer check (duration_months between 1 and 120),
      created_at timestamptz(3) not null default now(),
      check ((percent_off_ppm is null) <> (amount_off is null)),
      check ((amount_off is null) = (currency is null)),
      check ((duration = 'repeating') = (duration_months is not null))
    )`.execute(db);
  await grantApp(db, 'billing_coupons', ['select', 'insert']);

  await sql`
    create table billing_promotion_codes (
      id uuid primary key,
      code text not null unique check (code ~ '^[A-Z0-9][A-Z0-9_-]{2,39}$'),
      coupon_id uuid not null references billing_coupons (id),
      active boolean not null default true,
      max_redemptions integer check (max_redemptions > 0),
      times_redeemed integer not null default 0,
      expires_at timestamptz(3),
      created_at timestamptz(3) not null default now(),
      check (max_redemptions is null or times_redeemed <= max_redemptions)
    )`.execute(db);
  await grantApp(db, 'billing_promotion_codes', ['select', 'insert', 'update']);

  // The coupon an org has (a snapshot: a coupon never changes, but the org keeps what it redeemed).
  await sql`
    create table billing_customer_discounts (
      tenant_id uuid not null,
      id uuid not null,
      coupon_id uuid not null,
      promotion_code text,
      coupon jsonb not null,
      started_at timestamptz(3) not null,
      ends_at timestamptz(3),
      times_applied integer not null default 0,
      active boolean not null default true,
      created_at timestamptz(3) not null default now(),
      primary key (tenant_id, id)
    )`.execute(db);
  await sql`create unique index billing_customer_discounts_active on billing_customer_discounts (tenant_id) where active`.execute(db);
  await protectTenantTable(db, 'billing_customer_discounts', ['select', 'insert', 'update']);

  await sql`
    create table billing_tax_rates (
      id uuid primary key,
      country text not null check (country ~ '^[A-Z]{2}$'),
      region text not null default '' check (char_length(region) <= 10),
      name text not null check (char_length(name) between 1 and 100),
      percentage_ppm integer not null check (percentage_ppm between 0 and 1000000),
      inclusive boolean not null default false,
      active boolean not null default true,
      created_at timestamptz(3) not null default now()
    )`.execute(db);
  await sql`create unique index billing_tax_rates_active on billing_tax_rates (country, region) where active`.execute(db);
  await grantApp(db, 'billing_tax_rates', ['select', 'insert', 'update']);

  await sql`
    create table billing_credit_notes (
      tenant_id uuid not null,
      id uuid not null,
      invoice_id uuid not null,
      amount bigint not null check (amount > 0),
      -- Of the amount: what reduced the invoice's amount due, what went to the credit balance, what was refunded.
      outstanding_amount bigint not null default 0,
      balance_amount bigint not null default 0,
      refund_amount bigint not null default 0,
      gateway_refund_id text,
      reason text not null check (reason in ('duplicate', 'fraudulent', 'order_change', 'product_unsatisfactory', 'other')),
      memo text not null default '' check (char_length(memo) <= 500),
      created_at timestamptz(3) not null default now(),
      primary key (tenant_id, id),
      foreign key (tenant_id, invoice_id) references billing_invoices (tenant_id, id),
      check (outstanding_amount + balance_amount + refund_amount = amount)
    )`.execute(db);
  await sql`create index billing_credit_notes_invoice_idx on billing_credit_notes (tenant_id, invoice_id)`.execute(db);
  await protectTenantTable(db, 'billing_credit_notes', ['select', 'insert']);

  // The customer's credit balance (what it is owed), and every movement of it.
  await sql`
    create table billing_customer_balances (
      tenant_id uuid not null primary key,
      currency text not null,
      balance bigint not null check (balance >= 0),
      updated_at timestamptz(3) not null default now()
    )`.execute(db);
  await protectTenantTable(db, 'billing_customer_balances', ['select', 'insert', 'update']);
  await sql`
    create table billing_balance_transactions (
      tenant_id uuid not null,
      id uuid not null,
      amount bigint not null,
      currency text not null,
      kind text not null check (kind in ('credit_note', 'invoice_overpayment', 'applied_to_invoice', 'invoice_voided')),
      invoice_id uuid,
      credit_note_id uuid,
      created_at timestamptz(3) not null default now(),
      primary key (tenant_id, id)
    )`.execute(db);
  await protectTenantTable(db, 'billing_balance_transactions', ['select', 'insert']);
}
