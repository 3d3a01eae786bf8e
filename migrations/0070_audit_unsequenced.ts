import { sql, type Kysely } from 'kysely';

/**
 * The audit chain moves off the write path. A write now appends an unsequenced record (seq, prev_hash and
 * hash null) in its own transaction, without touching the chain head; the sequencer (audit.jobs.ts) later
 * gives committed records their seq and hashes under the head lock, one runner per chain.
 *
 * - `pos`: insertion position from a sequence, only for ordering pending records (the sequencer takes them
 *   in pos order within what it can see). Existing rows keep pos null: they are already sequenced, and
 *   filling them would rewrite the table.
 * - A record is sequenced as a whole or not at all; a pending one always has a pos. Both checks are added
 *   NOT VALID here (no long lock) and validated by 0071.
 * - `audit_sequencer_pending`: the owner role (migrations, the sequencer, `plinth audit verify`) may read
 *   pending records of every tenant without a tenant context, to find which chains have a backlog. Tenant
 *   tables FORCE RLS, so without this policy even the owner would see nothing outside a context. Sequenced
 *   records stay visible only in their tenant's context.
 *
 * Expand: the previous release (which appends under the head lock) still works on this schema.
 */
export const phase = 'expand';

export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    alter table audit_events
      alter column seq drop not null,
      alter column prev_hash drop not null,
      alter column hash drop not null`.execute(db);
  await sql`create sequence audit_events_pos_seq as bigint`.execute(db);
  await sql`alter table audit_events add column pos bigint`.execute(db);
  await sql`alter table audit_events alter column pos set default nextval('audit_events_pos_seq')`.execute(db);
  await sql`alter sequence audit_events_pos_seq owned by audit_events.pos`.execute(db);
  await sql`grant usage on sequence audit_events_pos_seq to plinth_app`.execute(db);
  await sql`
    alter table audit_events add constraint audit_events_sequenced_whole
      check ((seq is null) = (prev_hash is null) and (seq is null) = (hash is null)) not valid`.execute(db);
  await sql`
    alter table audit_events add constraint audit_events_pending_pos
      check (seq is not null or pos is not null) not valid`.execute(db);
  await sql`create policy audit_sequencer_pending on audit_events for select to current_user using (seq is null)`.execute(db);
}
