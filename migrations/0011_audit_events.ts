import { sql, type Kysely } from 'kysely';
import { grantApp, protectTenantTable } from '../src/platform/migrate/helpers.ts';

/**
 * Append-only, hash-chained audit log per org. The app role may only SELECT and INSERT events.
 * audit_chains holds each chain's head (last seq + hash): appends lock that row (serializing them per
 * org) and the verifier compares it with the last event, so deleting the newest rows is detected too.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table audit_events (
      tenant_id uuid not null,
      id uuid not null,
      seq bigint not null check (seq > 0),
      occurred_at timestamptz not null,
      actor_type text not null check (actor_type in ('user', 'api_key', 'system')),
      actor_id text not null,
      actor_user_id uuid,
      action text not null,
      target_type text not null,
      target_id text not null,
      request_id text,
      ip text,
      changes jsonb not null default '{}'::jsonb,
      prev_hash text not null,
      hash text not null,
      primary key (tenant_id, id),
      unique (tenant_id, seq)
    )`.execute(db);
  await sql`create index audit_events_action_idx on audit_events (tenant_id, action, seq)`.execute(db);
  await sql`create index audit_events_actor_idx on audit_events (tenant_id, actor_id, seq)`.execute(db);
  await sql`create index audit_events_target_idx on audit_events (tenant_id, target_type, target_id, seq)`.execute(db);
  await protectTenantTable(db, 'audit_events', ['select', 'insert']);

  await sql`
    create table audit_chains (
      tenant_id uuid primary key,
      last_seq bigint not null,
      last_hash text not null,
      updated_at timestamptz not null default now()
    )`.execute(db);
  await grantApp(db, 'audit_chains', ['select', 'insert', 'update']);
}
