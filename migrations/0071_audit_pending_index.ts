import { sql, type Kysely } from 'kysely';
import type { MigrationContext } from '../src/platform/migrate/migrator.ts';

/**
 * The sequencer's and the list's index of pending (unsequenced) records, in insertion order. Partial, so
 * it only ever holds the backlog. Built CONCURRENTLY on Postgres (outside a transaction: writes to
 * audit_events go on meanwhile), and the checks 0070 added NOT VALID are validated here, which takes a
 * lock that does not block writes either.
 */
export const phase = 'expand';
export const transactional = false;

export async function up(db: Kysely<any>, ctx: MigrationContext): Promise<void> {
  await sql`alter table audit_events validate constraint audit_events_sequenced_whole`.execute(db);
  await sql`alter table audit_events validate constraint audit_events_pending_pos`.execute(db);
  const concurrently = sql.raw(ctx.kind === 'postgres' ? 'concurrently' : '');
  await sql`create index ${concurrently} if not exists audit_events_pending_idx on audit_events (tenant_id, pos) where seq is null`.execute(db);
}
