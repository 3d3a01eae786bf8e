import { sql, type Kysely } from 'kysely';
import { grantApp } from '../src/platform/migrate/helpers.ts';

/** Only adds a table: the previous release runs unchanged on the migrated schema. */
export const phase = 'expand';

/**
 * The invoice run's queue (issue #14): a renewal by the wall clock commits one row per (org, subscription,
 * period end) in its own transaction, and the `billing.invoice_run` job invoices the queued orgs in batches.
 * Like `billing_dunning_schedule` it holds no billing data, only "which org, which period": global (no RLS,
 * read across orgs by the runner), distributed by tenant_id. The key is the subscription period, so a period
 * is queued once however often its renewal event is delivered; a processed row is kept (`done_at`) as the
 * record that the period was invoiced, and pruned after 35 days.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table billing_invoice_queue (
      tenant_id uuid not null,
      subscription_id uuid not null,
      period_end timestamptz(3) not null,
      enqueued_at timestamptz(3) not null default now(),
      done_at timestamptz(3),
      invoice_id uuid,
      -- Batches that failed with this period in them (the run retries a row until MAX_QUEUE_ATTEMPTS).
      attempts integer not null default 0,
      last_error text,
      primary key (tenant_id, subscription_id, period_end)
    )`.execute(db);
  await sql`create index billing_invoice_queue_pending on billing_invoice_queue (enqueued_at) where done_at is null and attempts < 10`.execute(db);
  await grantApp(db, 'billing_invoice_queue', ['select', 'insert', 'update', 'delete']);
}
