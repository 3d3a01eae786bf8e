import { sql, type Kysely } from 'kysely';
import { grantApp } from '../src/platform/migrate/helpers.ts';

export const phase = 'expand';

/**
 * Scheduled organization deletions (directory module, data rights): requested by an owner, purged after
 * the grace period by a worker schedule. Keyed by org id and kept after the purge as a tombstone (ids,
 * times and a row count, no personal data), so it is a coordinator-local table, not tenant data.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table org_deletions (
      org_id uuid primary key,
      requested_by uuid,
      requested_at timestamptz(3) not null default now(),
      purge_after timestamptz(3) not null,
      cancelled_at timestamptz(3),
      purged_at timestamptz(3),
      rows_deleted integer
    )`.execute(db);
  await grantApp(db, 'org_deletions', ['select', 'insert', 'update']);
}
