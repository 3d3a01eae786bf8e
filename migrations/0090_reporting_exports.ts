import { sql, type Kysely } from 'kysely';
import { grantApp, protectTenantTable } from '../src/platform/migrate/helpers.ts';

export const phase = 'expand';

/**
 * Exports (reporting module). `reporting_exports` is the tenant's record (RLS): what was asked, progress,
 * outcome. `reporting_export_jobs` is the platform's work queue across tenants (ids only, no tenant data):
 * workers claim from it with per-org and global concurrency limits, and the retention schedule finds
 * expired files through it.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table reporting_exports (
      tenant_id uuid not null,
      id uuid not null,
      resource text not null check (char_length(resource) <= 40),
      format text not null check (format in ('csv', 'ndjson')),
      filters jsonb not null default '{}',
      status text not null check (status in ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired')),
      requested_by uuid not null,
      rows_done bigint not null default 0,
      rows_total bigint,
      bytes bigint,
      attempts integer not null default 0,
      error_code text,
      error_detail text,
      storage_key text,
      created_at timestamptz(3) not null default now(),
      started_at timestamptz(3),
      finished_at timestamptz(3),
      expires_at timestamptz(3),
      updated_at timestamptz(3) not null default now(),
      primary key (tenant_id, id)
    )`.execute(db);
  await protectTenantTable(db, 'reporting_exports');

  await sql`
    create table reporting_export_jobs (
      export_id uuid primary key,
      tenant_id uuid not null,
      state text not null check (state in ('queued', 'running', 'done')),
      queued_at timestamptz(3) not null default now(),
      lease_until timestamptz(3),
      attempts integer not null default 0,
      expires_at timestamptz(3),
      storage_key text
    )`.execute(db);
  await sql`create index reporting_export_jobs_queue on reporting_export_jobs (queued_at) where state <> 'done'`.execute(db);
  await sql`create index reporting_export_jobs_expiry on reporting_export_jobs (expires_at) where state = 'done'`.execute(db);
  await grantApp(db, 'reporting_export_jobs', ['select', 'insert', 'update', 'delete']);
}
