import { sql, type Kysely } from 'kysely';

/**
 * The app role now only appends pending records: it may insert an event's content but not its place in
 * the chain (seq, prev_hash, hash), and no longer writes the chain heads. Only the sequencer (owner role)
 * sequences, so a compromised app role can neither forge a chained record nor move a head.
 *
 * Contract: the previous release appended sequenced records as the app role and fails on this schema.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`revoke insert on audit_events from plinth_app`.execute(db);
  await sql`
    grant insert (tenant_id, id, occurred_at, actor_type, actor_id, actor_user_id, action, target_type, target_id, request_id, ip, changes)
    on audit_events to plinth_app`.execute(db);
  await sql`revoke insert, update on audit_chains from plinth_app`.execute(db);
}
