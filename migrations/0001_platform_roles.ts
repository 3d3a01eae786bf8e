import { sql, type Kysely } from 'kysely';

/**
 * The application role: it owns nothing and has no BYPASSRLS, so row-level security binds it.
 * Roles are cluster-wide; several databases (or concurrent test runs) may race to create it.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    do $$
    begin
      create role plinth_app login nosuperuser nobypassrls nocreatedb nocreaterole;
    exception when duplicate_object or unique_violation then null;
    end $$`.execute(db);
  await sql`grant usage on schema public to plinth_app`.execute(db);
}
