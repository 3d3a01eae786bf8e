import { sql, type CompiledQuery, type Kysely, type QueryCreator } from 'kysely';
import type { DB } from '../db/database.ts';

/** The idempotency table is global (tenant and caller are hashed into the key), read with the app role. */
export type IdempotencyTables = Pick<DB, 'idempotency_keys'>;
type Db = Kysely<IdempotencyTables>;

export interface StoredResponse {
  status: number;
  /** JSON object of the replayed headers. */
  headers: string;
  /** Sealed body (see idempotency.ts). */
  body: string;
}

export interface StoredRow {
  request_hash: string;
  state: string;
  /** Seconds left on an in-flight claim's lease (computed by the database, no clock skew). */
  lease_left: number | string | null;
  response_status: number | null;
  response_headers: unknown;
  response_body: string | null;
}

const seconds = (n: number) => sql<Date>`now() + make_interval(secs => ${n})`;

/**
 * One atomic upsert on the primary key: a fresh key, an expired one, or a lapsed in-flight claim of the
 * same request becomes ours; any number of processes agree on one winner. True when we hold the claim.
 */
export async function claimKey(
  db: Db,
  c: { scopeHash: string; tenantId: string | null; requestHash: string; token: string; leaseSec: number; ttlSec: number },
): Promise<boolean> {
  const { rows } = await sql<{ scope_hash: string }>`
    insert into idempotency_keys (scope_hash, tenant_id, request_hash, state, locked_until, expires_at, claim_token)
    values (${c.scopeHash}, ${c.tenantId}, ${c.requestHash}, 'in_flight', ${seconds(c.leaseSec)}, ${seconds(c.ttlSec)}, ${c.token})
    on conflict (scope_hash) do update set
      request_hash = excluded.request_hash, state = 'in_flight', locked_until = excluded.locked_until,
      expires_at = excluded.expires_at, created_at = now(), claim_token = excluded.claim_token,
      response_status = null, response_headers = null, response_body = null
    where idempotency_keys.expires_at < now()
       or (idempotency_keys.state = 'in_flight' and idempotency_keys.locked_until < now()
           and idempotency_keys.request_hash = excluded.request_hash)
    returning scope_hash`.execute(db);
  return rows.length === 1;
}

/**
 * First statement of the request's transaction: the claim must still be ours and in flight. The update
 * takes the row lock, so no retry can take the claim over until this transaction ends.
 */
export async function fenceClaim(db: Db, scopeHash: string, token: string, leaseSec: number): Promise<boolean> {
  const result = await db
    .updateTable('idempotency_keys')
    .set({ locked_until: seconds(leaseSec) })
    .where('scope_hash', '=', scopeHash)
    .where('claim_token', '=', token)
    .where('state', '=', 'in_flight')
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/** Gives a claim up (the request failed): only while it still carries our token. */
export async function releaseKey(db: Db, scopeHash: string, token: string): Promise<void> {
  await db
    .deleteFrom('idempotency_keys')
    .where('scope_hash', '=', scopeHash)
    .where('claim_token', '=', token)
    .where('state', '=', 'in_flight')
    .execute();
}

/** Returns false when the claim was no longer ours (lease lapsed and taken over, or expired and swept). */
export async function recordResponse(db: Db, scopeHash: string, token: string, r: StoredResponse): Promise<boolean> {
  const result = await storeResponse(db, scopeHash, token, r).executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/** in_flight → done with the response, for the claim `token` only. */
function storeResponse(db: QueryCreator<IdempotencyTables>, scopeHash: string, token: string, r: StoredResponse) {
  return db
    .updateTable('idempotency_keys')
    .set({ state: 'done', response_status: r.status, response_headers: sql`${r.headers}::jsonb`, response_body: r.body })
    .where('scope_hash', '=', scopeHash)
    .where('claim_token', '=', token)
    .where('state', '=', 'in_flight');
}

/**
 * The stored response as the statement that ends the request's transaction (`UnitOfWork.commit`), sent with
 * its COMMIT: it fails — and so refuses that COMMIT — unless this claim still holds the key in flight (a cast of
 * the reason to int is the error; Postgres has no ASSERT in plain SQL). The fence at BEGIN locked the row for
 * this transaction, so the claim does hold; the check keeps that a fact rather than an assumption.
 */
export function recordResponseStatement(db: Db, scopeHash: string, token: string, r: StoredResponse): CompiledQuery {
  return db
    .with('recorded', (q) => storeResponse(q, scopeHash, token, r).returning(sql<number>`1`.as('one')))
    // The cast wraps the CASE, not its ELSE: a constant branch is folded when the statement is planned, and
    // would fail every time.
    .selectNoFrom(sql<number>`cast(case when exists (select from recorded) then '1' else 'idempotency claim no longer held' end as int)`.as('held'))
    .compile();
}

/** Extends the lease of claims this process still holds (token → scope hash pairs). */
export async function renewLeases(db: Db, claims: Array<[token: string, scopeHash: string]>, leaseSec: number): Promise<void> {
  // A claim whose request is writing is row-locked by its transaction (the fence): skip it rather than
  // wait (its owner is plainly alive, and no retry can take it over while the lock is held).
  await db
    .updateTable('idempotency_keys')
    .set({ locked_until: seconds(leaseSec) })
    .where('scope_hash', 'in', (eb) =>
      eb
        .selectFrom('idempotency_keys')
        .select('scope_hash')
        .where('scope_hash', 'in', claims.map(([, scope]) => scope))
        .where('claim_token', 'in', claims.map(([token]) => token))
        .where('state', '=', 'in_flight')
        .forUpdate()
        .skipLocked(),
    )
    .execute();
}

export async function readKey(db: Db, scopeHash: string): Promise<StoredRow | undefined> {
  return db
    .selectFrom('idempotency_keys')
    .select(['request_hash', 'state', 'response_status', 'response_headers', 'response_body'])
    .select(sql<number | string | null>`extract(epoch from (locked_until - now()))`.as('lease_left'))
    .where('scope_hash', '=', scopeHash)
    .executeTakeFirst();
}

/** Deletes expired keys in batches; returns how many went. */
export async function sweepIdempotencyKeys(db: Db, batch = 1000): Promise<number> {
  const result = await sql`
    delete from idempotency_keys where scope_hash in (
      select scope_hash from idempotency_keys where expires_at < now() limit ${batch})`.execute(db);
  return Number(result.numAffectedRows ?? 0);
}
