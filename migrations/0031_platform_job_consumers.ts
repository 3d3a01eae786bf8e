import { sql, type Kysely } from 'kysely';
import { grantApp } from '../src/platform/migrate/helpers.ts';

/**
 * The consumers every worker version has declared, so the relay fans an event out to all of them whichever
 * process relays it (an old worker beside a new one during a rolling deploy). Expand-only: old code never
 * reads this table, new code fills it at worker start.
 */
/** Only widens/adds: the previous release runs unchanged beside it (rollback needs no schema rollback). */
export const phase = 'expand';

export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table job_consumers (
      consumer text primary key,
      event_name text not null,
      max_attempts integer not null check (max_attempts between 1 and 100),
      registered_at timestamptz not null default now(),
      last_seen_at timestamptz not null default now()
    )`.execute(db);
  await sql`create index job_consumers_event on job_consumers (event_name)`.execute(db);
  await grantApp(db, 'job_consumers', ['select', 'insert', 'update']);
}
