import { sql, type Kysely } from 'kysely';
import { protectTenantTable } from '../src/platform/migrate/helpers.ts';

/**
 * Personal data leaves the hashed audit record (GDPR art. 17 without breaking the chain). A new event keeps
 * its personal values (the request IP, e-mail addresses in its changes) in `audit_personal_data` rows, one
 * per data subject, and carries only their pseudonymous reference `pd_ref`, which the chain hash covers.
 * Erasing a subject blanks its rows (data `{}`, subject null); the events, their hashes and the references
 * stay, so `plinth audit verify` still passes.
 *
 * - `subject`: `user:<uuid>` or `email:<sha256 of the normalized address>` (someone invited who has no
 *   account); null when nobody identifiable (or once erased).
 * - The app role reads and inserts in the tenant's context (record, list). Across tenants it sees only
 *   the rows about the subjects its transaction names in `app.data_subjects` (comma-separated keys, set by
 *   the erasure and export use cases, like tenancy's `app.user_id` self-read), and the only update it may
 *   make to them is the erasure itself (WITH CHECK: data `{}`, subject null, erased_at set).
 *
 * Expand: `audit_events.pd_ref` is a new nullable column; the previous release neither reads nor writes it,
 * and still reads `ip`/`changes` (null / without the personal values for new events). Contract step, for a
 * later release: none needed for the columns (old rows keep their values, see the audit README on erasure
 * of events recorded before this migration).
 */
export const phase = 'expand';

export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table audit_events add column pd_ref uuid`.execute(db);
  await sql`
    create table audit_personal_data (
      tenant_id uuid not null,
      id uuid not null,
      ref uuid not null,
      subject text,
      data jsonb not null,
      created_at timestamptz(3) not null default now(),
      erased_at timestamptz(3),
      primary key (tenant_id, id)
    )`.execute(db);
  await sql`create index audit_personal_data_ref_idx on audit_personal_data (tenant_id, ref)`.execute(db);
  await sql`create index audit_personal_data_subject_idx on audit_personal_data (subject) where subject is not null`.execute(db);
  await protectTenantTable(db, 'audit_personal_data', ['select', 'insert', 'update']);
  const named = sql`subject = any(string_to_array(nullif(current_setting('app.data_subjects', true), ''), ','))`;
  // An UPDATE whose WHERE reads the row must leave it visible to a SELECT policy (the new row too): the
  // blank rows an erasure leaves stay readable while subjects are named (they hold ids and times only).
  await sql`
    create policy audit_personal_data_subject_read on audit_personal_data for select to plinth_app
      using (${named} or (subject is null and erased_at is not null and nullif(current_setting('app.data_subjects', true), '') is not null))`.execute(db);
  await sql`
    create policy audit_personal_data_subject_erase on audit_personal_data for update to plinth_app
      using (${named})
      with check (subject is null and data = '{}'::jsonb and erased_at is not null)`.execute(db);
}
