import { sql, type Kysely } from 'kysely';

/**
 * Idempotency claims become short leases renewed by a heartbeat. `claim_token` names the request that
 * holds an in-flight claim, so a heartbeat, a release or a recorded response only ever touches the claim
 * it made — never one taken over after its lease lapsed. Rows from before this migration have no token:
 * they are done (replayed as before) or in flight under the old 60 s lock, which still expires.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table idempotency_keys add column claim_token text`.execute(db);
}
