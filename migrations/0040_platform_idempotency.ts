import { sql, type Kysely } from 'kysely';
import { grantApp } from '../src/platform/migrate/helpers.ts';

/**
 * Stored responses for Idempotency-Key replay. Not a tenant table: public routes (signup) have no tenant,
 * and the scope (tenant + principal/IP + key) is hashed into the primary key, so a row can only ever be
 * found by the caller that created it. Rows expire after IDEMPOTENCY_TTL_SEC and are swept.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table idempotency_keys (
      scope_hash text primary key,
      tenant_id uuid,
      request_hash text not null,
      state text not null check (state in ('in_flight', 'done')),
      locked_until timestamptz not null,
      response_status integer,
      response_headers jsonb,
      response_body text,
      created_at timestamptz not null default now(),
      expires_at timestamptz not null
    )`.execute(db);
  await sql`create index idempotency_keys_expires_at on idempotency_keys (expires_at)`.execute(db);
  await grantApp(db, 'idempotency_keys', ['select', 'insert', 'update', 'delete']);
}
