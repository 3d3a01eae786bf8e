import { sql, type Kysely } from 'kysely';
import type { MigrationContext } from '../src/platform/migrate/migrator.ts';

/**
 * Invoices aggregate a subscription's metered usage over its window straight from the usage ledger (so a
 * line recomputes exactly, hour-aligned or not): an index by (org, metric, time). Built CONCURRENTLY on
 * Postgres (outside a transaction: ingestion goes on meanwhile).
 */
export const phase = 'expand';
export const transactional = false;

export async function up(db: Kysely<any>, ctx: MigrationContext): Promise<void> {
  const concurrently = sql.raw(ctx.kind === 'postgres' ? 'concurrently' : '');
  await sql`create index ${concurrently} if not exists billing_usage_events_window_idx on billing_usage_events (tenant_id, metric, occurred_at)`.execute(db);
}
