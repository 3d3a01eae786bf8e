import { sql, type Kysely } from 'kysely';
import { protectTenantTable } from '../src/platform/migrate/helpers.ts';

/**
 * Webhook endpoints and their delivery log (notifications module). Tenant-owned: composite keys and RLS.
 * The signing secret is stored AES-256-GCM encrypted (it must be usable to sign, so it cannot be hashed).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table webhook_endpoints (
      tenant_id uuid not null,
      id uuid not null,
      url text not null check (char_length(url) <= 2048),
      description text not null default '' check (char_length(description) <= 500),
      events text[] not null check (cardinality(events) between 1 and 50),
      active boolean not null default true,
      secret_ciphertext text not null,
      consecutive_failures integer not null default 0,
      disabled_reason text,
      created_by uuid,
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now(),
      primary key (tenant_id, id)
    )`.execute(db);
  await sql`create index webhook_endpoints_events on webhook_endpoints using gin (events) where active`.execute(db);
  await protectTenantTable(db, 'webhook_endpoints');

  await sql`
    create table webhook_deliveries (
      tenant_id uuid not null,
      id uuid not null,
      webhook_id uuid not null,
      event_id uuid not null,
      event_type text not null,
      body text not null,
      status text not null default 'pending' check (status in ('pending', 'succeeded', 'failed', 'dead')),
      attempts integer not null default 0,
      last_status_code integer,
      last_error_kind text,
      last_duration_ms integer,
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now(),
      delivered_at timestamptz(3),
      primary key (tenant_id, id),
      unique (tenant_id, webhook_id, event_id),
      foreign key (tenant_id, webhook_id) references webhook_endpoints (tenant_id, id) on delete cascade
    )`.execute(db);
  // The delivery list: newest first per endpoint (keyset on id, a UUIDv7).
  await sql`create index webhook_deliveries_by_endpoint on webhook_deliveries (tenant_id, webhook_id, id desc)`.execute(db);
  await protectTenantTable(db, 'webhook_deliveries');
}
