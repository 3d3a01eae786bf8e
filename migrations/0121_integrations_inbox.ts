import { sql, type Kysely } from 'kysely';
import { protectTenantTable } from '../src/platform/migrate/helpers.ts';

export const phase = 'expand';

/**
 * Inbound vendor webhooks (HubSpot v3-signed): stored first after the signature check, deduplicated by
 * the vendor's event id per connection, processed asynchronously by a job. Tenant-owned: RLS.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table integration_inbox (
      tenant_id uuid not null,
      id uuid not null,
      connection_id uuid not null,
      dedupe_key text not null check (char_length(dedupe_key) <= 200),
      event_type text not null check (char_length(event_type) <= 200),
      payload jsonb not null,
      status text not null default 'received' check (status in ('received', 'processed')),
      received_at timestamptz(3) not null default now(),
      processed_at timestamptz(3),
      primary key (tenant_id, id),
      unique (tenant_id, connection_id, dedupe_key),
      foreign key (tenant_id, connection_id) references integration_connections (tenant_id, id) on delete cascade
    )`.execute(db);
  await protectTenantTable(db, 'integration_inbox');
}
