import { sql, type Kysely } from 'kysely';
import type { MigrationContext } from '../src/platform/migrate/migrator.ts';

/**
 * Time-weighted sums read the raw events of one metric in time order (the level in force at the period's
 * start and every change inside it), and invoices aggregate one metric over a usage window: an index by
 * (org, metric, time). Built CONCURRENTLY on Postgres
 * (outside a transaction: ingestion goes on meanwhile). Validates the meters' widened check from 0081.
 */
export const phase = 'expand';
export const transactional = false;

export async function up(db: Kysely<any>, ctx: MigrationContext): Promise<void> {
  await sql`alter table billing_meters validate constraint billing_meters_aggregation_check`.execute(db);
  const concurrently = sql.raw(ctx.kind === 'postgres' ? 'concurrently' : '');
  await sql`create index ${concurrently} if not exists billing_usage_events_metric_time on billing_usage_events (tenant_id, metric, occurred_at)`.execute(db);
}
