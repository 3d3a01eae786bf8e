import { sql, type Kysely } from 'kysely';
import { protectTenantTable } from '../src/platform/migrate/helpers.ts';

export const phase = 'expand';

/**
 * Integrations: an org's connections to outside systems (analytics, CRM, generic HTTP) and the delivery
 * log of outbox events sent through them (pending, succeeded, dead letters). Tenant-owned: composite keys,
 * RLS. Credentials are stored AES-256-GCM encrypted (they must be usable, so they cannot be hashed).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table integration_connections (
      tenant_id uuid not null,
      id uuid not null,
      connector text not null check (char_length(connector) <= 50),
      name text not null check (char_length(name) between 1 and 200),
      config jsonb not null default '{}',
      credentials_ciphertext text not null,
      events text[] not null check (cardinality(events) between 1 and 100),
      active boolean not null default true,
      last_success_at timestamptz(3),
      last_error_at timestamptz(3),
      last_error text check (char_length(last_error) <= 1000),
      consecutive_failures integer not null default 0,
      backfill_status text not null default 'idle' check (backfill_status in ('idle', 'running', 'done')),
      backfill_cursor text check (char_length(backfill_cursor) <= 2000),
      backfill_count integer not null default 0,
      created_by uuid,
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now(),
      primary key (tenant_id, id),
      unique (tenant_id, name)
    )`.execute(db);
  await sql`create index integration_connections_events on integration_connections using gin (events) where active`.execute(db);
  await protectTenantTable(db, 'integration_connections');

  await sql`
    create table integration_deliveries (
      tenant_id uuid not null,
      id uuid not null,
      connection_id uuid not null,
      event_id uuid not null,
      event_name text not null,
      event jsonb not null,
      status text not null default 'pending' check (status in ('pending', 'succeeded', 'dead')),
      attempts integer not null default 0,
      last_status_code integer,
      last_error text check (char_length(last_error) <= 1000),
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now(),
      delivered_at timestamptz(3),
      primary key (tenant_id, id),
      unique (tenant_id, connection_id, event_id),
      foreign key (tenant_id, connection_id) references integration_connections (tenant_id, id) on delete cascade
    )`.execute(db);
  // Per connection by status, newest first: the backlog count, the dead-letter list, the batch claim.
  await sql`create index integration_deliveries_by_connection on integration_deliveries (tenant_id, connection_id, status, id)`.execute(db);
  await protectTenantTable(db, 'integration_deliveries');
}
