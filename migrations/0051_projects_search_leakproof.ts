import { sql, type Kysely } from 'kysely';

/**
 * Makes the tasks' full-text index usable under row-level security. The planner may use a clause as an index
 * condition on an RLS table only when its operator's function is LEAKPROOF (otherwise it must run after the
 * tenant policy, as a filter). `tsvector @@ tsquery` (ts_match_vq) is not marked so in core, so every search of
 * the app role ignored tasks_search_idx and scanned the project: a word absent from a 10^6-task project took
 * 1.4-4 s (measured 2026-12-01, bench P4). ts_match_vq only compares its arguments and raises no
 * data-dependent error, which is what LEAKPROOF promises.
 *
 * Marking a function LEAKPROOF needs a superuser. Migrations run as the owner, which is one in development,
 * tests (PGlite) and the bench; a production owner usually is not, so there this does nothing and
 * docs/production.md has the operator run the one statement as a superuser (search stays correct without
 * it, only the rare-word case is slow). It changes no table: the previous release is unaffected.
 */
export const phase = 'expand';

export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    do $$
    begin
      if (select rolsuper from pg_roles where rolname = current_user) then
        alter function pg_catalog.ts_match_vq(tsvector, tsquery) leakproof;
      else
        raise notice 'not a superuser: run "alter function pg_catalog.ts_match_vq(tsvector, tsquery) leakproof" as one (docs/production.md)';
      end if;
    end $$`.execute(db);
}
