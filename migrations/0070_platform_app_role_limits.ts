import { sql, type Kysely } from 'kysely';
import type { MigrationContext } from '../src/platform/migrate/migrator.ts';

/**
 * Role-level limits for plinth_app in this database. Behind PgBouncer (transaction pooling) the app sends
 * no startup options, so these defaults are what bounds statements outside tenant transactions (which set
 * their own with SET LOCAL). Scoped to this database: the role is cluster-wide.
 * Expand: only new defaults, which the previous release runs happily under.
 */
export const phase = 'expand';

export async function up(db: Kysely<any>, ctx: MigrationContext): Promise<void> {
  // The embedded PGlite database has one in-process connection and nothing to bound.
  if (ctx.kind === 'pglite') return;
  await sql`
    do $$
    begin
      execute format('alter role plinth_app in database %I set statement_timeout = %L', current_database(), '30s');
      execute format('alter role plinth_app in database %I set idle_in_transaction_session_timeout = %L', current_database(), '60s');
    end $$`.execute(db);
}
